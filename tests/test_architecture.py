"""The layout's dependency rules, checked on every import in the source (function-level ones too),
and on what each import brings in after it: the transitive closure of the package's own imports,
and, by importing each layer in a fresh interpreter, the third-party packages those load in turn.

The layers form one ladder, and a module imports only its own layer and those below it:

    schemas <- wire <- engines <- pools <- moderation <- topology <- application <- dev and bench tools
                               (sinks sit beside moderation: schemas and faults only)

- `workers/faults.py` (test-only fault points) is a leaf that pools, sinks and above may use;
- third-party frameworks stay in their layer: engines use torch and transformers, never Ray,
  Faust or Kafka; pools add Ray; `wire` (what gateways share with workers) uses aiokafka and
  prometheus_client, which nothing else below `topology` loads, and Faust is topology's alone;
  moderation reaches the models only through the pools;
- a gateway (client, verdict reader, reply claim, serve, callers) loads nothing of the worker:
  only `schemas` and `wire`, and neither Faust, Ray nor torch;
- production code imports nothing from dev/ or bench/, except the CLI, whose commands start them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"guardstream": "guardstream", "schemas": "guardstream.schemas", "topology": "guardstream.topology",
           "workers": "guardstream.workers", "wire": "guardstream.wire"}
TOOLS = ("guardstream.dev", "guardstream.bench")
FAULTS = "guardstream.workers.faults"
# (layer, rank, what it may import besides lower ranks and itself). Sinks and moderation share a rank
# but not each other.
LAYERS = [
    ("guardstream.schemas", 0),
    ("guardstream.wire", 0.5),
    ("guardstream.workers.engines", 1),
    ("guardstream.workers.pools", 2),
    ("guardstream.workers.moderation", 3),
    ("guardstream.workers.sinks", 3),
    ("guardstream.topology", 4),
]
SINKS_MAY_IMPORT = ("guardstream.schemas", FAULTS)
APP_RANK = 5  # guardstream.* outside the core and the tools: runtime, client, serve, kafka_io
GATEWAY = ("guardstream.client", "guardstream.verdict_reader", "guardstream.reply_claim", "guardstream.serve",
           "guardstream.serve_settings", "guardstream.callers")
GATEWAY_MAY_IMPORT = ("guardstream.schemas", "guardstream.wire", *GATEWAY)
GATEWAY_NEVER_LOADS = ("faust", "mode", "ray", "torch", "transformers")
SERVING = ("faust", "mode", "aiokafka", "prometheus_client")
FORBIDDEN_THIRD_PARTY = {
    "guardstream.schemas": ("torch", "transformers", "ray", "psycopg", *SERVING),
    "guardstream.wire": ("torch", "transformers", "ray", "psycopg", "faust", "mode"),
    "guardstream.workers.engines": ("ray", "psycopg", *SERVING),
    "guardstream.workers.pools": ("psycopg", *SERVING),
    "guardstream.workers.moderation": ("torch", "transformers", "ray", "psycopg", *SERVING),
    "guardstream.workers.sinks": ("torch", "transformers", "ray", *SERVING),
    FAULTS: ("torch", "transformers", "ray", "psycopg", *SERVING),
}


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def layer_of(module: str) -> tuple[str, int]:
    if within(module, "guardstream.cli"):
        return "the CLI", APP_RANK + 3  # its commands start everything, the tools included
    if within(module, "guardstream.bench"):
        return "bench", APP_RANK + 2  # benchmarks run the dev tools' broker, fixtures and workers
    if within(module, "guardstream.dev"):
        return "dev", APP_RANK + 1
    if within(module, FAULTS):
        return FAULTS, 1  # a leaf beside the engines (which never use it), for the pools and above
    for layer, rank in LAYERS:
        if within(module, layer):
            return layer, rank
    if within(module, "guardstream.workers"):
        return "guardstream.workers", 3
    return "application", APP_RANK


def modules() -> dict[str, str]:
    """Module name → source, for every module of the package."""
    found = {}
    for folder, package in SOURCES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path.read_text()
    return found


def imports(source: str, known: set[str]) -> set[str]:
    """The modules `source` imports; `from package import module` names the module itself."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names}
    return names


def violations(found: dict[str, str], known: set[str] | None = None) -> list[str]:
    wrong = []
    known = set(found) if known is None else known
    for module, source in found.items():
        layer, rank = layer_of(module)
        for target in imports(source, known):
            if not within(target, "guardstream"):
                banned = next((b for scope, bans in FORBIDDEN_THIRD_PARTY.items() if within(module, scope)
                               for b in bans if within(target, b)), None)
                if banned:
                    wrong.append(f"{module} -> {target}: {layer} does not use {banned}")
                continue
            target_layer, target_rank = layer_of(target)
            if within(target, *TOOLS) and not within(module, *TOOLS, "guardstream.cli"):
                wrong.append(f"{module} -> {target}: production code imports nothing from dev/ or bench/")
            elif target_rank > rank:
                wrong.append(f"{module} -> {target}: {layer} is below {target_layer}")
            elif layer == "guardstream.workers.sinks" and not within(target, layer, *SINKS_MAY_IMPORT):
                wrong.append(f"{module} -> {target}: a sink imports only sinks, schemas and faults")
            elif target_rank == rank and target_layer != layer and layer != "guardstream.workers":
                wrong.append(f"{module} -> {target}: {layer} and {target_layer} are siblings")
    return sorted(wrong)


def banned_for(module: str) -> tuple[str, ...]:
    return tuple(b for scope, bans in FORBIDDEN_THIRD_PARTY.items() if within(module, scope) for b in bans)


def transitive_violations(found: dict[str, str], known: set[str] | None = None) -> list[str]:
    """Third-party packages a layer bans that one of its modules reaches through the package's own
    imports (a module may import only allowed ones, and still load a banned one through another)."""
    known = set(found) if known is None else known
    direct = {module: imports(source, known) for module, source in found.items()}
    wrong = []
    for module in found:
        bans = banned_for(module)
        if not bans:
            continue
        seen, path, todo = {module}, {module: [module]}, [module]
        while todo:
            here = todo.pop()
            for target in sorted(direct.get(here, ())):
                if within(target, "guardstream"):
                    if target in found and target not in seen:
                        seen.add(target)
                        path[target] = path[here] + [target]
                        todo.append(target)
                elif here != module and (banned := next((b for b in bans if within(target, b)), None)):
                    wrong.append(f"{module} -> {target}: {layer_of(module)[0]} does not use {banned} "
                                 f"(through {' -> '.join(path[here][1:])})")
    return sorted(set(wrong))


def loaded_by(modules: list[str], watched: tuple[str, ...], path: str | None = None) -> list[str]:
    """The watched top-level packages a fresh interpreter holds after importing `modules`."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & set({list(watched)!r}))))")
    env_path = [path] if path else []
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={"PYTHONPATH": ":".join([*env_path, *sys.path])})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_module_imports_against_the_layers():
    found = modules()
    assert len(found) > 40 and "guardstream.workers.engines.qwen3" in found
    assert violations(found) == []


def test_no_layer_reaches_what_it_bans_through_other_modules():
    assert transitive_violations(modules()) == []


def test_no_layer_loads_what_it_bans_when_imported():
    """Each layer imported on its own, in a fresh interpreter: third-party packages count too."""
    found = modules()
    layers = {scope: sorted(m for m in found if within(m, scope)) for scope in FORBIDDEN_THIRD_PARTY}
    with ThreadPoolExecutor(len(layers)) as pool:
        loaded = dict(zip(layers, pool.map(lambda scope: loaded_by(layers[scope], FORBIDDEN_THIRD_PARTY[scope]),
                                            layers)))
    assert {scope: held for scope, held in loaded.items() if held} == {}


def test_the_transitive_checks_catch_a_planted_violation(tmp_path):
    planted = {"guardstream.workers.moderation.m": "from guardstream.workers.engines.messages import X",
               "guardstream.workers.engines.messages": "def f():\n    from guardstream.workers.engines.model import M",
               "guardstream.workers.engines.model": "import torch"}
    assert violations(planted) == []  # every import on its own is allowed
    assert [v.split(" (")[0] for v in transitive_violations(planted)] == [
        "guardstream.workers.moderation.m -> torch: guardstream.workers.moderation does not use torch"]
    # a third-party package that loads a banned one is seen when the layer is imported
    (tmp_path / "innocent.py").write_text("import heavy\n")
    (tmp_path / "heavy.py").write_text("")
    (tmp_path / "planted_layer.py").write_text("import innocent\n")
    assert loaded_by(["planted_layer"], ("heavy",), str(tmp_path)) == ["heavy"]


def test_the_check_catches_each_kind_of_wrong_import():
    bad = {"guardstream.workers.engines.x": "from guardstream.topology.settings import Settings",
           "guardstream.workers.moderation.m": "from guardstream.topology.settings import Settings\nimport faust",
           "guardstream.workers.pools.p": "from guardstream.workers.moderation.rules import GenRules\nimport aiokafka",
           "guardstream.workers.engines.e": "import ray\nimport torch\nfrom transformers import AutoConfig",
           "guardstream.workers.sinks.y": "import guardstream.runtime\nfrom guardstream.workers.engines import qwen3",
           "guardstream.workers.moderation.s": "from guardstream.workers.sinks.audit import open_audit_store",
           "guardstream.schemas.z": "from guardstream.workers.faults import hit",
           "guardstream.topology.t": "from guardstream.client import Guard\nimport faust",
           "guardstream.runtime": "from guardstream.dev import tiny_checkpoints",
           "guardstream.cli": "def f():\n    from guardstream.dev.demo import run_demo"}
    known = {"guardstream.workers.faults", "guardstream.dev.tiny_checkpoints", "guardstream.workers.engines.qwen3"}
    assert {v.split(":")[0] for v in violations(bad, known)} == {
        "guardstream.workers.engines.x -> guardstream.topology.settings",
        "guardstream.workers.moderation.m -> guardstream.topology.settings",
        "guardstream.workers.moderation.m -> faust",
        "guardstream.workers.pools.p -> guardstream.workers.moderation.rules",
        "guardstream.workers.pools.p -> aiokafka",
        "guardstream.workers.engines.e -> ray",
        "guardstream.workers.sinks.y -> guardstream.runtime",
        "guardstream.workers.sinks.y -> guardstream.workers.engines.qwen3",
        "guardstream.workers.moderation.s -> guardstream.workers.sinks.audit",
        "guardstream.schemas.z -> guardstream.workers.faults",
        "guardstream.topology.t -> guardstream.client",
        "guardstream.runtime -> guardstream.dev.tiny_checkpoints"}


def gateway_reaches(found: dict[str, str]) -> list[str]:
    """The package's own modules a gateway module reaches through its imports, outside what it may."""
    known = set(found)
    direct = {module: imports(source, known) for module, source in found.items()}
    wrong, seen, todo = [], set(GATEWAY), list(GATEWAY)
    while todo:
        here = todo.pop()
        for target in sorted(direct.get(here, ())):
            if within(target, "guardstream") and target not in seen:
                seen.add(target)
                if not within(target, *GATEWAY_MAY_IMPORT):
                    wrong.append(f"{here} -> {target}")
                todo.append(target)
    return sorted(wrong)


def test_a_gateway_imports_nothing_of_the_worker():
    found = modules()
    assert gateway_reaches(found) == []
    assert loaded_by(list(GATEWAY), GATEWAY_NEVER_LOADS) == []
    planted = {**found, "guardstream.reply_claim": found["guardstream.reply_claim"] +
               "\nfrom guardstream.topology.settings import Settings\n"}
    assert gateway_reaches(planted)[0] == "guardstream.reply_claim -> guardstream.topology.settings"
