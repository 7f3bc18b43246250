"""What a non-editable install ships: every package of the tree, and the data the CLI and the
fixtures read (an installed wheel has no repository around it to find them in)."""

import tomllib
from pathlib import Path

from guardstream import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_with_its_data():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    folders = {package: ROOT / folder for package, folder in tool["package-dir"].items()}
    found = set()
    for package, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            found.add(".".join((package, *init.parent.relative_to(folder).parts)))
    assert found == listed
    data = tool["package-data"]
    assert data["guardstream"] == ["examples/*"] and data["guardstream.dev"] == ["fixtures/*", "kafka_jars/*"]
    assert (ROOT / "guardstream" / "examples").resolve() == EXAMPLES
    assert {p.name for p in EXAMPLES.iterdir()} >= {"conversations.jsonl", "streams.jsonl", "policy.json"}
    assert {p.name for p in (ROOT / "guardstream" / "dev" / "fixtures").iterdir()} >= {
        "corpus.jsonl", "gen_chat_template.jinja", "stream_chat_template.jinja"}
    from guardstream.dev.kafka import JARS, RELEASES
    assert {p.name for p in JARS.iterdir()} == {f"{version}.sha256" for version in RELEASES}
