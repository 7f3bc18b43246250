"""The docs stay true: the README's size, its folder map, the links between the documents, and
every setting `docs/configuration.md` names loading into the field it names."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path


from guardstream.console.settings import ConsoleSettings
from guardstream.serve_settings import ServeSettings
from guardstream.topology.settings import Settings
from guardstream.wire.settings import flat_names

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAPPED = ("schemas", "wire", "workers", "topology", "guardstream")  # folders whose modules the map names one by one
SPECIAL = {  # settings whose values are documents or secrets: (environment value, what the field then reads)
    "agents": ("gen,stream", lambda v: v == frozenset({"gen", "stream"})),
    "languages": ("es,zh", lambda v: v == ("es", "zh")),
    "policy": ('{"default": {"mode": "loose"}}', lambda v: v.default.mode == "loose"),
    "canary": ('{"gen_model": "probe", "sample": 0.5}', lambda v: v.gen_model == "probe" and v.sample == 0.5),
    "canary_sample_secret": ("probe-secret", lambda v: v.get_secret_value() == "probe-secret"),
    "faults": ("deliver=1", lambda v: v == "deliver=1"),
    "topic_prefix": ("probe.", lambda v: v == "probe."),
    "serve_rate": ("7/minute", lambda v: v == "7/minute"),
    "review_session_secret": ("probe-secret", lambda v: v.get_secret_value() == "probe-secret"),
}


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_the_readme_folder_map_names_every_module():
    readme = (ROOT / "README.md").read_text()
    folder_map = readme[readme.index("## Where things are"):readme.index("## A moderation request")]
    missing = []
    for folder in MAPPED:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).parts
            if path.name == "__init__.py" or parts[:2] in {("guardstream", f) for f in ("cli", "dev", "bench")}:
                continue  # those folders are named as a whole
            if not re.search(rf"\b{re.escape(path.stem)}\b", folder_map):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_every_relative_link_leads_to_a_file():
    broken = []
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" not in target and not (document.parent / target).exists():
                broken.append(f"{document.relative_to(ROOT)} -> {target}")
    assert broken == []


def documented_settings() -> list[str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    names = []
    for line in text.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([A-Z0-9_]+)`", line.split("|")[1])
    return names


# each flat name → the settings that read it, and the path of its field there (`gen_actors` → gen, actors)
OWNER = {flat: owner for owner in (ServeSettings, ConsoleSettings, Settings) for flat in flat_names(owner)}
FLAT = {flat: flat_names(owner)[flat] for flat, owner in OWNER.items()}


def field_info(flat: str):
    *parts, name = FLAT[flat]
    model = OWNER[flat]
    for part in parts:
        model = model.model_fields[part].annotation
    return model.model_fields[name]


def read(settings, flat: str):
    value = settings
    for name in FLAT[flat]:
        value = getattr(value, name)
    return value


def probe_value(field: str) -> tuple[str, typing.Callable[[object], bool]]:
    """An environment value other than the default, and how the loaded field must read it."""
    if field in SPECIAL:
        return SPECIAL[field]
    info = field_info(field)
    optional = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
    kind = next(a for a in typing.get_args(info.annotation) if a is not type(None)) if optional else info.annotation
    if typing.get_origin(kind) is typing.Literal:
        choice = next(c for c in typing.get_args(kind) if c != info.default)
        return choice, lambda v: v == choice
    if kind is bool:
        return "true", lambda v: v is True
    if kind in (int, float):
        upper = next((m.le for m in info.metadata if hasattr(m, "le")), None)
        number = kind(info.default or 0) + 1 if upper is None or (info.default or 0) + 1 <= upper else kind(upper) - 1
        return str(number), lambda v: v == number
    if kind is Path:
        return "/tmp/guardstream-probe", lambda v: v == Path("/tmp/guardstream-probe")
    return "probe", lambda v: v == "probe"


def test_every_documented_setting_loads_into_the_field_it_names():
    names = documented_settings()
    assert len(names) > 60 and "KAFKA_BOOTSTRAP" in names and "HOME" in names
    assert sorted(set(n.lower() for n in names) ^ set(FLAT)) == [], \
        "a setting the docs name that does not exist, or one that exists and is not documented"
    for name in names:
        raw, reads = probe_value(name.lower())
        loaded = OWNER[name.lower()].load(environ={f"GUARDSTREAM_{name}": raw})
        assert reads(read(loaded, name.lower())), f"GUARDSTREAM_{name}={raw!r} -> {read(loaded, name.lower())!r}"
