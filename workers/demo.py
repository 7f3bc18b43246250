"""`guardstream demo`: the whole pipeline on one machine, with a live table of what comes out."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from guardstream.topology.settings import Settings
from guardstream.topology.topics import ensure_topics
from guardstream.workers.broker import EmbeddedBroker
from guardstream.workers.kafka_io import produce_lines, records
from guardstream.workers.tiny_checkpoints import build_tiny_checkpoints

POLICY = Path(__file__).resolve().parent.parent / "examples" / "policy.json"
STYLE = {"allow": "green", "review": "yellow", "block": "bold red"}


def _resolve_model(gen_model: str | None, console: Console) -> str:
    if gen_model:
        return gen_model
    console.print("[yellow]No --gen-model: using the tiny TEST-FIXTURE checkpoint (not a safety model).[/]")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=console, transient=True) as bar:
        task = bar.add_task("building tiny checkpoints (once, then cached)", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"building tiny checkpoints: {what}", completed=done, total=total)

        return str(build_tiny_checkpoints(report).gen)


def _table(rows: list[dict], dead: list[dict], expected: int) -> Table:
    table = Table(title=f"verdicts {len(rows)}/{expected}   dead letters {len(dead)}", expand=True)
    for column in ("tenant", "moderate", "text", "risk", "categories", "action"):
        table.add_column(column, overflow="fold")
    for v in rows[-25:]:
        table.add_row(v["tenant"], v["moderate"], (v.get("excerpt") or "")[:60], v["risk_level"],
                      ", ".join(v["categories"]) or "-", f"[{STYLE[v['action']]}]{v['action']}[/]")
    for d in dead[-5:]:
        table.add_row("-", "dlq", d["raw_value"][:60], d["error_code"], d["error"][:60], "[magenta]dead letter[/]")
    return table


async def _watch(settings: Settings, bootstrap: str, lines: list[str], timeout_s: float, console: Console) -> int:
    await produce_lines(settings, bootstrap, "conversations", lines)
    verdicts: list[dict] = []
    dead: list[dict] = []
    deadline = time.monotonic() + timeout_s
    done = lambda: len(verdicts) + len(dead) >= len(lines) or time.monotonic() > deadline  # noqa: E731

    async def follow(role: str, into: list[dict]) -> None:
        async for message in records(settings, bootstrap, role, until=done):
            into.append(json.loads(message.value))

    with Live(_table(verdicts, dead, len(lines)), console=console, refresh_per_second=4) as live:
        followers = asyncio.gather(follow("verdicts", verdicts), follow("dlq", dead))
        while not done():
            live.update(_table(verdicts, dead, len(lines)))
            await asyncio.sleep(0.25)
        live.update(_table(verdicts, dead, len(lines)))
        await followers
    missing = len(lines) - len(verdicts) - len(dead)
    if missing:
        console.print(f"[red]{missing} events got no verdict within {timeout_s:.0f}s[/]; see the worker log")
        return 1
    counts = {a: sum(v["action"] == a for v in verdicts) for a in STYLE}
    console.print(f"[green]done[/]: {len(verdicts)} verdicts ({counts}), {len(dead)} dead letters")
    return 0


def run_demo(events_file: Path, gen_model: str | None, timeout_s: float, console: Console) -> int:
    settings = Settings.load(audit_store_text=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    model = _resolve_model(gen_model, console)
    lines = [line for line in events_file.read_text().splitlines() if line.strip()]
    with EmbeddedBroker(log_path=settings.home / "broker.log") as broker:
        console.print(f"embedded broker on [bold]{broker.bootstrap}[/]")
        asyncio.run(ensure_topics(settings, broker.bootstrap))
        log_path = settings.home / "worker.log"
        env = {**os.environ, "GUARDSTREAM_AUDIT_STORE_TEXT": "true", "GUARDSTREAM_APP_ID": f"guardstream-demo-{os.getpid()}"}
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "guardstream.workers.cli", "worker", "--bootstrap", broker.bootstrap,
                 "--gen-model", model, "--policy", str(POLICY)], stdout=log, stderr=subprocess.STDOUT, env=env)
        console.print(f"worker started (pid {worker.pid}, log {log_path}); starting Ray and loading the model...")
        try:
            return asyncio.run(_watch(settings, broker.bootstrap, lines, timeout_s, console))
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
