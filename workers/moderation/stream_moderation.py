"""The Stream path's one step: a micro-batch of chunk records → chunk verdicts and dead letters.

Three parts, each with its own tests: the sequencer (`stream_sequence.py`: seqs, gaps, held
chunks, limits, what the table keeps) decides which chunks are next in line; the pool's actors
judge their tokens in one batched step, rebuilding a session an actor lost from the stored ids;
the judge (`stream_judge.py`) turns the token verdicts into chunk and stream verdicts under the
tenant's policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable

from guardstream.schemas import DeadLetter, VerdictEvent
from guardstream.schemas.intake import RawRecord
from guardstream.workers.engines.messages import StreamAnswer, StreamCall
from guardstream.workers.moderation.rules import StreamRules
from guardstream.workers.moderation.stream_judge import StreamJudge
from guardstream.workers.moderation.stream_sequence import Ready, StreamSequencer
from guardstream.workers.moderation.stream_state import Staged, StreamRef
from guardstream.workers.pools.unavailable import StreamUnavailable

log = logging.getLogger(__name__)


class StreamModerator:
    def __init__(self, rules: StreamRules, pool, tokenizer, model_id: str,
                 on_rebuild: Callable[[int], object] = lambda count: None):
        """`on_rebuild(n)` hears of each step that had to rebuild n sessions (a metric, in the worker)."""
        self.rules, self.pool, self.tokenizer, self.model_id = rules, pool, tokenizer, model_id
        self.sequencer = StreamSequencer(rules, tokenizer, pool.max_positions)
        self.judge = StreamJudge(rules, model_id)
        self.on_rebuild = on_rebuild

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.sequencer.prompt_ids(prompt)

    async def moderate(self, records: list[RawRecord], store: Staged, release: Iterable[StreamRef] = (),
                       now: float | None = None, waits_from: float = 0.0) -> tuple[list[VerdictEvent], list[DeadLetter]]:
        """Judge a batch, and release what waits in the streams `release` names (see
        `StreamSequencer.take`). Reads and writes go through `store`; the caller applies its writes
        once the verdicts are delivered."""
        taken = self.sequencer.take(records, store, release, now, waits_from)
        await self._tell_languages(taken.ready)
        verdicts = await self._judge(taken.ready, store) if taken.ready else []
        self.sequencer.settle(taken, store)
        return verdicts, taken.letters

    def drop_held(self, store: Staged, ref: StreamRef, reason: str) -> list[DeadLetter]:
        return self.sequencer.drop_held(store, ref, reason)

    async def _tell_languages(self, ready: list[Ready]) -> None:
        """The languages of new streams whose first chunk named none, told from their prompts in one
        batch, in a thread: the detector's process is spoken to off the event loop."""
        if untold := [r for r in ready if r.untold is not None]:
            told = await asyncio.to_thread(self.rules.detector.languages_of, [r.untold for r in untold])
            for r, language in zip(untold, told):
                r.state.language = language

    async def _judge(self, ready: list[Ready], store: Staged) -> list[VerdictEvent]:
        def call(r: Ready, rebuild: bool) -> StreamCall:
            reopen = rebuild or not r.state.opened
            return StreamCall(session=json.dumps(list(r.ref)), new_ids=[i for ids in r.ids for i in ids],
                              prompt_ids=self.sequencer.reopening_prompt(store, r) if reopen else None,
                              history_ids=self.sequencer.judged_ids(store, r) if rebuild else [],
                              close=r.state.done, judged=r.state.token_count)

        judged = [r for r in ready if r.chunks]  # a stream whose first chunk was already too long needs no model
        began = time.perf_counter()
        try:
            answers = await self.pool.step([call(r, rebuild=False) for r in judged]) if judged else []
            lost = [i for i, a in enumerate(answers) if a.missing]
            if lost:
                log.info("rebuilding %d stream sessions on their actors (lost by a restart or an eviction, or out of step)",
                         len(lost))
                self.on_rebuild(len(lost))
                for i, answer in zip(lost, await self.pool.step([call(judged[i], rebuild=True) for i in lost])):
                    answers[i] = answer
            failure = None
        except StreamUnavailable as exc:
            log.error("Stream pool unavailable for %d streams, applying fail modes: %s", len(judged), exc)
            answers, failure = [StreamAnswer("", missing=True) for _ in judged], f"stream pool unavailable: {exc}"
        latency_ms = (time.perf_counter() - began) * 1000
        by_stream = dict(zip((r.ref for r in judged), answers))
        verdicts = []
        for r in ready:  # an engine error on one session fails only that stream
            answer = by_stream.get(r.ref, StreamAnswer(""))
            verdicts += self.judge.verdicts(r, answer, failure or answer.error, latency_ms)
        return verdicts
