"""`guardstream demo`: the whole pipeline on one machine, with a live table of what comes out."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from guardstream import EXAMPLES
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints
from guardstream.dev.worker_process import WorkerProcess
from guardstream.kafka_io import produce_lines, records
from guardstream.topology.settings import Settings
from guardstream.topology.topics import ensure_topics

POLICY = EXAMPLES / "policy.json"
STREAMS = EXAMPLES / "streams.jsonl"
STYLE = {"allow": "green", "review": "yellow", "block": "bold red", "stop": "bold red"}


def _resolve_models(gen_model: str | None, console: Console) -> tuple[str, str | None]:
    """The Gen model and, when the fixtures are used, the fixture Stream model (else the worker's own setting)."""
    if gen_model:
        return gen_model, None
    console.print("[yellow]No --gen-model: using the tiny TEST-FIXTURE checkpoints (not safety models).[/]")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=console, transient=True) as bar:
        task = bar.add_task("building tiny checkpoints (once, then cached)", total=None)

        def report(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"building tiny checkpoints: {what}", completed=done, total=total)

        tiny = build_tiny_checkpoints(report)
        return str(tiny.gen), str(tiny.stream)


def _table(rows: list[dict], dead: list[dict], expected: int, finals: dict[str, dict], streams: int) -> Table:
    title = f"verdicts {len(rows)}/{expected}   dead letters {len(dead)}   streams finished {len(finals)}/{streams}"
    table = Table(title=title, expand=True)
    for column in ("tenant", "moderate", "text", "risk", "categories", "action"):
        table.add_column(column, overflow="fold")
    for v in rows[-25:]:
        table.add_row(v["tenant"], v["moderate"], (v.get("excerpt") or "")[:60], v["risk_level"],
                      ", ".join(v["categories"]) or "-", f"[{STYLE[v['action']]}]{v['action']}[/]")
    for d in dead[-5:]:
        table.add_row("-", "dlq", d["raw_value"][:60], d["error_code"], d["error"][:60], "[magenta]dead letter[/]")
    for stream_id, v in sorted(finals.items()):
        where = v["stream"]["stop_token"]
        table.add_row(v["tenant"], "stream", f"{stream_id}: {v['stream']['token_count']} tokens judged as they streamed",
                      v["risk_level"], f"stopped at token {where}" if where is not None else "never stopped",
                      f"[{STYLE[v['action']]}]{v['action']}[/]")
    return table


async def _watch(settings: Settings, bootstrap: str, lines: list[str], chunk_lines: list[str], timeout_s: float,
                 console: Console) -> int:
    await produce_lines(settings, bootstrap, "conversations", lines)
    await produce_lines(settings, bootstrap, "chunks", chunk_lines)
    streams = len({json.loads(line)["stream_id"] for line in chunk_lines})
    verdicts: list[dict] = []
    dead: list[dict] = []
    finals: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    done = lambda: (len(verdicts) + len(dead) >= len(lines) and len(finals) >= streams) or time.monotonic() > deadline  # noqa: E731

    async def follow(role: str) -> None:
        async for message in records(settings, bootstrap, role, until=done):
            value = json.loads(message.value)
            if role == "dlq":
                dead.append(value)
            elif value.get("stream") is None:
                verdicts.append(value)
            elif value["stream"]["final"]:  # per-chunk and prompt verdicts of streams are summed up by the final one
                finals[value["stream"]["stream_id"]] = value

    def view() -> Table:
        return _table(verdicts, dead, len(lines), finals, streams)

    with Live(view(), console=console, refresh_per_second=4) as live:
        followers = asyncio.gather(follow("verdicts"), follow("dlq"))
        while not done():
            live.update(view())
            await asyncio.sleep(0.25)
        live.update(view())
        await followers
    missing = len(lines) - len(verdicts) - len(dead) + streams - len(finals)
    if missing:
        console.print(f"[red]{missing} events or streams got no verdict within {timeout_s:.0f}s[/]; see the worker log")
        return 1
    counts = {a: sum(v["action"] == a for v in verdicts) for a in ("allow", "review", "block")}
    stopped = sum(v["stream"]["stop_token"] is not None for v in finals.values())
    console.print(f"[green]done[/]: {len(verdicts)} verdicts ({counts}), {len(dead)} dead letters, "
                  f"{len(finals)} streams moderated token by token ({stopped} stopped)")
    return 0


def run_demo(events_file: Path, gen_model: str | None, timeout_s: float, console: Console) -> int:
    settings = Settings.load(audit_store_text=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    model, stream_model = _resolve_models(gen_model, console)
    lines = [line for line in events_file.read_text().splitlines() if line.strip()]
    chunk_lines = [line for line in STREAMS.read_text().splitlines() if line.strip()]
    with EmbeddedBroker(log_path=settings.home / "broker.log") as broker:
        console.print(f"embedded broker on [bold]{broker.bootstrap}[/]")
        asyncio.run(ensure_topics(settings, broker.bootstrap))
        log_path = settings.home / "worker.log"
        worker = WorkerProcess(broker.bootstrap, log_path, "--gen-model", model,
                               *(["--stream-model", stream_model] if stream_model else []), "--policy", str(POLICY),
                               audit_store_text="true", app_id=f"guardstream-demo-{os.getpid()}")
        console.print(f"worker started (pid {worker.process.pid}, log {log_path}); starting Ray and loading the model...")
        try:
            return asyncio.run(_watch(settings, broker.bootstrap, lines, chunk_lines, timeout_s, console))
        finally:
            worker.stop()
