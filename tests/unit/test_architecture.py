"""The layout's dependency rules, checked on every import in the source (function-level ones too).

- the engines (models) import only each other and the wire schemas;
- the core (schemas, topology, workers) never imports the application (CLI, worker start-up,
  Kafka client helpers, the gateway client and its endpoint) or its dev and bench tools;
- production code, the application included, imports nothing from dev/ or bench/, except the
  CLI, whose commands start them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"guardstream": "guardstream", "schemas": "guardstream.schemas", "topology": "guardstream.topology",
           "workers": "guardstream.workers"}
APPLICATION = ("guardstream.cli", "guardstream.runtime", "guardstream.kafka_io", "guardstream.client", "guardstream.serve",
               "guardstream.dev", "guardstream.bench")
TOOLS = ("guardstream.dev", "guardstream.bench")
CORE = ("guardstream.schemas", "guardstream.topology", "guardstream.workers")
ENGINES = "guardstream.workers.engines"


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def modules() -> dict[str, str]:
    """Module name → source, for every module of the package."""
    found = {}
    for folder, package in SOURCES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path.read_text()
    return found


def imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if within(n, "guardstream")}


def violations(found: dict[str, str]) -> list[str]:
    wrong = []
    for module, source in found.items():
        for target in imports(source):
            if within(module, ENGINES) and not within(target, ENGINES, "guardstream.schemas"):
                wrong.append(f"{module} -> {target}: an engine imports only engines and schemas")
            if within(module, *CORE) and within(target, *APPLICATION):
                wrong.append(f"{module} -> {target}: the core imports nothing of the application")
            if not within(module, *TOOLS, "guardstream.cli") and within(target, *TOOLS):
                wrong.append(f"{module} -> {target}: production code imports nothing from dev/ or bench/")
    return sorted(wrong)


def test_no_module_imports_against_the_layers():
    found = modules()
    assert len(found) > 40 and "guardstream.workers.engines.qwen3" in found
    assert violations(found) == []


def test_the_check_catches_each_kind_of_upward_import():
    bad = {"guardstream.workers.engines.x": "from guardstream.topology.settings import Settings",
           "guardstream.workers.sinks.y": "import guardstream.runtime",
           "guardstream.runtime": "from guardstream.dev import tiny_checkpoints",
           "guardstream.cli": "def f():\n    from guardstream.dev.demo import run_demo"}
    assert {v.split(":")[0] for v in violations(bad)} == {
        "guardstream.runtime -> guardstream.dev",
        "guardstream.workers.engines.x -> guardstream.topology.settings",
        "guardstream.workers.sinks.y -> guardstream.runtime"}
