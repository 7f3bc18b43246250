"""The gateway client against the real pipeline: moderate, a guarded stream that is stopped where the
reference stops it, the fail modes on a timeout, and 100 concurrent streams over one reader."""

from __future__ import annotations

import asyncio

import pytest

from guardstream.client import Guard, conversation
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.schemas import Action, RiskLevel
from guardstream.wire.policy import Policy
from guardstream.topology.settings import Settings
from guardstream.dev.stream_reference import StreamGuardReference

from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import POLICY
from tests.helpers.stream_helpers import CHUNK, build_streams, reference_stop

pytestmark = pytest.mark.integration


def client_settings() -> Settings:
    return Settings.load({}, topic_prefix="it.", policy=Policy.model_validate(POLICY))


def test_moderate_returns_the_verdict_of_its_own_event(worker):
    prompts = [ex for ex in load_corpus("train") if ex.kind == "prompt"]
    unsafe = next(ex for ex in prompts if ex.label == "Unsafe")
    safe = next(ex for ex in prompts if ex.label == "Safe")

    async def run():
        async with Guard(worker.bootstrap, client_settings(), timeout_s=120) as guard:
            return await asyncio.gather(*(guard.moderate(conversation(f"cl-{i}", "gw-strict", ex.messages[0]["content"]))
                                          for i, ex in enumerate((unsafe, safe, unsafe))))

    outcomes = asyncio.run(run())
    assert [o.verdict.risk_level for o in outcomes] == [RiskLevel.unsafe, RiskLevel.safe, RiskLevel.unsafe]
    assert [o.action for o in outcomes] == [Action.block, Action.allow, Action.block]
    assert len({o.verdict.source_event_id for o in outcomes}) == 3 and not any(o.timed_out for o in outcomes)


def test_a_timeout_applies_the_tenants_fail_mode(worker):
    async def run():
        async with Guard(worker.bootstrap, client_settings()) as guard:
            late = [await guard.moderate(conversation(f"cl-late-{tenant}", tenant, "hello"), timeout=0.001)
                    for tenant in ("gw-strict", "gw-loose")]  # gw-strict: the default fail-closed policy; gw-loose: fail-open
            async with guard.stream("cl-late-stream", "hello", tenant="gw-loose", timeout=0.001) as s:
                await s.push("hi there")
                ended = await s.finish()
            after = await guard.moderate(conversation("cl-after", "gw-strict", "hello"), timeout=120)
            return late, ended, after

    (closed, open_), ended, after = asyncio.run(run())
    assert closed.timed_out and closed.action is Action.block
    assert open_.timed_out and open_.action is Action.allow
    assert ended.timed_out and ended.action is Action.allow
    assert not after.timed_out and after.verdict.conversation_id == "cl-after"  # a late verdict confuses nothing


def test_guarded_streams_stop_where_the_reference_says(worker, tiny):
    tok = cached_tokenizer(tiny.stream)
    model = StreamGuardReference.from_pretrained(tiny.stream)
    streams = build_streams(tok)[:100]
    streams = (streams * (100 // len(streams) + 1))[:100]  # 100 concurrent streams, the corpus's replies reused
    expected = [reference_stop(model, tok, s) for s in streams]
    assert any(e is not None for e in expected) and any(e is None for e in expected)

    async def guarded(guard: Guard, index: int, s: dict):
        async with guard.stream(f"cl-conv-{index}", s["prompt"], tenant="gw-strict", stream_id=f"cl-{index}") as g:
            for k in range(0, len(s["ids"]), CHUNK):
                if g.stopped.is_set():
                    break
                await g.push(s["ids"][k : k + CHUNK])
                await asyncio.sleep(0.05)
            await asyncio.wait_for(g.stopped.wait(), 120) if expected[index] is not None else None
            outcome = await g.finish(timeout=240)
            return g, outcome

    async def run():
        async with Guard(worker.bootstrap, client_settings(), timeout_s=240, chunk_timeout_s=240) as guard:
            return await asyncio.gather(*(guarded(guard, i, s) for i, s in enumerate(streams)))

    results = asyncio.run(run())
    for (g, outcome), want in zip(results, expected):
        assert not outcome.timed_out and outcome.verdict.stream.final
        assert g.stopped.is_set() == (want is not None) and g.stop_token == want
        assert outcome.verdict.stream.stop_token == want
        assert g.prompt_verdict is not None and g.prompt_verdict.source_event_id == f"{g.stream_id}-0"
        assert [v.stream.seq for v in g.chunk_verdicts] == list(range(len(g.chunk_verdicts)))
