"""`guardstream demo`: the whole pipeline on one machine, driven as a gateway drives it (through
`guardstream.client`), with a live table of what comes out."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from guardstream import EXAMPLES
from guardstream.client import Guard, Outcome
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints
from guardstream.dev.worker_process import WorkerProcess
from guardstream.kafka_io import produce_lines, records
from guardstream.schemas import ConversationEvent, TokenChunkEvent
from guardstream.topology.settings import Settings
from guardstream.wire.topics import ensure_topics

POLICY = EXAMPLES / "policy.json"
STREAMS = EXAMPLES / "streams.jsonl"
STYLE = {"allow": "green", "review": "yellow", "block": "bold red", "stop": "bold red"}
CHUNK_PERIOD_S = 0.3  # the pace at which the demo's "LLM" emits reply chunks


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


@dataclass
class Board:
    """What the demo has seen so far: one row per event, per dead letter and per reply stream."""

    events: list[ConversationEvent]
    malformed: int
    streams: dict[str, list[TokenChunkEvent]]
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # event id → verdict or fail mode
    dead: list[dict] = field(default_factory=list)
    relayed: dict[str, str] = field(default_factory=dict)  # stream id → the reply text the user saw
    cut_at: dict[str, int] = field(default_factory=dict)  # stream id → the stop token
    finals: dict[str, Outcome] = field(default_factory=dict)

    def done(self) -> bool:
        return (len(self.outcomes) == len(self.events) and len(self.dead) >= self.malformed
                and len(self.finals) == len(self.streams))

    def table(self) -> Table:
        title = (f"verdicts {len(self.outcomes)}/{len(self.events)}   dead letters {len(self.dead)}   "
                 f"streams finished {len(self.finals)}/{len(self.streams)}")
        table = Table(title=title, expand=True)
        for column in ("tenant", "moderate", "text", "risk", "categories", "action"):
            table.add_column(column, overflow="fold")
        for event in self.events:
            if (outcome := self.outcomes.get(event.event_id)) is not None:
                v = outcome.verdict
                table.add_row(event.tenant, event.moderate.value, event.messages[-1].content[:60],
                              v.risk_level.value if v else "-", ", ".join(v.categories) if v else "timed out: fail mode",
                              _styled(outcome.action.value))
        for d in self.dead[-5:]:
            table.add_row("-", "dlq", d["raw_value"][:60], d["error_code"], d["error"][:60], "[magenta]dead letter[/]")
        for stream_id, chunks in self.streams.items():
            seen, final = self.relayed.get(stream_id, ""), self.finals.get(stream_id)
            where = (f"cut at token {self.cut_at[stream_id]}" if stream_id in self.cut_at
                     else "streaming" if final is None else "never stopped")
            table.add_row(chunks[0].tenant, "stream", f"{stream_id}: {_tail(seen, 60)}",
                          final.verdict.risk_level.value if final and final.verdict else "-", where,
                          _styled(final.action.value) if final else "…")
        return table


def _tail(text: str, width: int) -> str:
    """The end of `text` in `width` characters, marked as such when it is cut."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _styled(action: str) -> str:
    return f"[{STYLE[action]}]{action}[/]"


def _board(lines: list[str], chunk_lines: list[str]) -> tuple[Board, list[str]]:
    """The sample events, and the lines that are no event (the demo sends those raw, to show a dead letter)."""
    events, malformed = [], []
    for line in lines:
        try:
            events.append(ConversationEvent.model_validate_json(line))
        except ValidationError:
            malformed.append(line)
    streams: dict[str, list[TokenChunkEvent]] = defaultdict(list)
    for line in chunk_lines:
        chunk = TokenChunkEvent.model_validate_json(line)
        streams[chunk.stream_id].append(chunk)
    return Board(events, len(malformed), {s: sorted(c, key=lambda c: c.seq) for s, c in streams.items()}), malformed


async def _relay(guard: Guard, board: Board, chunks: list[TokenChunkEvent]) -> None:
    """Relay one reply to its user chunk by chunk, as a gateway does, and cut it when the guard says stop."""
    first = chunks[0]
    async with guard.stream(first.conversation_id, first.prompt, tenant=first.tenant, stream_id=first.stream_id) as s:
        for chunk in chunks:
            if s.stopped.is_set():
                board.cut_at[first.stream_id] = s.stop_token
                break
            await s.push(chunk.text_delta)
            board.relayed[first.stream_id] = board.relayed.get(first.stream_id, "") + chunk.text_delta
            await asyncio.sleep(CHUNK_PERIOD_S)
        board.finals[first.stream_id] = await s.finish()
        if s.stopped.is_set():
            board.cut_at[first.stream_id] = s.stop_token


async def _drive(settings: Settings, bootstrap: str, board: Board, malformed: list[str], timeout_s: float,
                 console: Console) -> int:
    deadline = time.monotonic() + timeout_s

    async def moderate(guard: Guard, event: ConversationEvent) -> None:
        board.outcomes[event.event_id] = await guard.moderate(event, timeout=max(1.0, deadline - time.monotonic()))

    async def follow_dead_letters() -> None:
        async for message in records(settings, bootstrap, "dlq", until=lambda: board.done() or time.monotonic() > deadline):
            board.dead.append(json.loads(message.value))

    async with Guard(bootstrap, settings, timeout_s=timeout_s, chunk_timeout_s=timeout_s) as guard:
        await produce_lines(settings, bootstrap, "conversations", malformed)
        with Live(board.table(), console=console, refresh_per_second=4) as live:
            watch = asyncio.gather(follow_dead_letters(), *(moderate(guard, event) for event in board.events))
            while not board.outcomes and time.monotonic() < deadline:  # the worker is up once it answers
                live.update(board.table())
                await asyncio.sleep(0.25)
            relays = asyncio.gather(*(_relay(guard, board, chunks) for chunks in board.streams.values()))
            while not board.done() and time.monotonic() < deadline:
                live.update(board.table())
                await asyncio.sleep(0.25)
            live.update(board.table())
            await asyncio.gather(watch, relays)
    timed_out = [o for o in [*board.outcomes.values(), *board.finals.values()] if o.timed_out]
    missing = len(timed_out) + board.malformed - min(len(board.dead), board.malformed)
    if missing:
        console.print(f"[red]{missing} events, streams or dead letters got no answer within {timeout_s:.0f}s[/]; "
                      "see the worker log")
        return 1
    counts = {a: sum(o.action.value == a for o in board.outcomes.values()) for a in ("allow", "review", "block")}
    console.print(f"[green]done[/]: {len(board.outcomes)} verdicts ({counts}), {len(board.dead)} dead letters, "
                  f"{len(board.finals)} streams moderated token by token ({len(board.cut_at)} cut)")
    return 0


def run_demo(events_file: Path, gen_model: str | None, timeout_s: float, console: Console) -> int:
    settings = Settings.load(audit_store_text=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    model, stream_model = _resolve_models(gen_model, console)
    lines = [line for line in events_file.read_text().splitlines() if line.strip()]
    board, malformed = _board(lines, [line for line in STREAMS.read_text().splitlines() if line.strip()])
    with EmbeddedBroker(log_path=settings.home / "broker.log") as broker:
        console.print(f"embedded broker on [bold]{broker.bootstrap}[/]")
        asyncio.run(ensure_topics(settings.kafka, broker.bootstrap))
        log_path = settings.home / "worker.log"
        worker = WorkerProcess(broker.bootstrap, log_path, "--gen-model", model,
                               *(["--stream-model", stream_model] if stream_model else []), "--policy", str(POLICY),
                               audit_store_text="true", app_id=f"guardstream-demo-{os.getpid()}")
        console.print(f"worker started (pid {worker.process.pid}, log {log_path}); starting Ray and loading the model...")
        try:
            return asyncio.run(_drive(settings, broker.bootstrap, board, malformed, timeout_s, console))
        finally:
            worker.stop()
