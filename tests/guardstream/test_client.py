"""The client's routing of verdicts to the requests waiting for them, and the endpoint's OpenAI mapping
(no broker: the integration tests run both against the real pipeline)."""

import asyncio

import pytest
from fastapi import HTTPException

from guardstream.client import Guard, Outcome, conversation
from guardstream.schemas import FOR_HEADER, Action, Moderate, RiskLevel, StreamPosition, VerdictEvent
from guardstream.serve import ModerationRequest, TextPart, as_result, texts_of
from guardstream.wire.policy import Policy, TenantPolicy
from guardstream.topology.settings import Settings


def verdict(source: str, tenant: str = "acme", conversation: str = "c", action: Action = Action.allow,
            stream: StreamPosition | None = None, moderate: Moderate = Moderate.response, **extra) -> VerdictEvent:
    return VerdictEvent(verdict_id=f"v-{source}-{action.value}", source_event_id=source, conversation_id=conversation,
                        tenant=tenant, moderate=moderate, model_id="m", model_variant="stream" if stream else "gen",
                        risk_level=extra.pop("risk_level", RiskLevel.safe), action=action, policy="p", latency_ms=1,
                        stream=stream, **extra)


def guard() -> Guard:
    policy = Policy(tenants={"open": TenantPolicy(fail_mode="open"), "watch": TenantPolicy(mode="observe"),
                             "watch-open": TenantPolicy(mode="observe", fail_mode="open")})
    return Guard("unused:9092", Settings.load({}, policy=policy))


NONCE, FORGED = "ab" * 16, "cd" * 16


def test_verdicts_reach_their_own_request_only():
    async def run():
        g = guard()
        with g.verdicts.expect(("acme", "c", "e1"), NONCE) as mine:
            g.verdicts.deliver(verdict("e1", tenant="other", nonce=NONCE))  # same ids, another tenant: not ours
            g.verdicts.deliver(verdict("e2", nonce=NONCE))
            # the right ids, but no nonce or another one: forged, or another request that reused the ids
            g.verdicts.deliver(verdict("e1", action=Action.allow))
            g.verdicts.deliver(verdict("e1", action=Action.allow, nonce=FORGED))
            assert not mine.done() and g.read["foreign"] == 4
            g.verdicts.deliver(verdict("e1", action=Action.block, nonce=NONCE))
        assert g.verdicts._waiting == {}  # the request's waiter leaves with it
        return mine.result()

    assert asyncio.run(run()).action is Action.block


def test_a_stream_hears_its_prompt_chunks_stop_and_final():
    async def run():
        g = guard()
        async with g.stream("c", "hi", tenant="acme", stream_id="s") as s:
            at = lambda seq, **kw: StreamPosition(stream_id="s", seq=seq, token_offset=0, token_count=4, **kw)  # noqa: E731
            g.verdicts.deliver(verdict("s-1", stream=at(1, stop_token=0), action=Action.stop))  # no nonce: forged, ignored
            assert not s.stopped.is_set() and not s.chunk_verdicts
            g.verdicts.deliver(verdict("s-0", moderate=Moderate.prompt, stream=at(0), nonce=s.nonce))
            g.verdicts.deliver(verdict("s-0", stream=at(0), nonce=s.nonce))
            g.verdicts.deliver(verdict("s-1", stream=at(1, stop_token=5), action=Action.stop, nonce=s.nonce))
            g.verdicts.deliver(verdict("s-2", stream=at(2), action=Action.block, nonce=s.nonce))
            g.verdicts.deliver(verdict("x-0", stream=StreamPosition(stream_id="x", seq=0, token_offset=0, token_count=1),
                               action=Action.stop, nonce=s.nonce))  # another stream's stop
            assert s.stopped.is_set() and s.stop_token == 5 and s.prompt_verdict.moderate is Moderate.prompt
            assert [v.stream.seq for v in s.chunk_verdicts] == [0, 1, 2]
            g.verdicts.deliver(verdict("s-3", stream=StreamPosition(stream_id="s", seq=None, token_offset=0, token_count=12,
                                                            stop_token=5, final=True), action=Action.stop, nonce=s.nonce))
            return await asyncio.wait_for(asyncio.shield(s._final), 1)

    assert asyncio.run(run()).stream.final
    with pytest.raises(ValueError, match="already being guarded"):
        async def twice():
            g = guard()
            async with g.stream("c", "hi", tenant="acme", stream_id="s"), g.stream("c", "hi", tenant="acme", stream_id="s"):
                pass
        asyncio.run(twice())


def test_a_streams_language_and_a_conversations_go_where_the_worker_reads_them():
    assert conversation("c", "acme", "hola", language="es").language == "es"

    async def run():
        g, sent = guard(), []

        async def send_chunk(chunk):
            sent.append(chunk)

        g.send_chunk, g.verdicts._reading = send_chunk, asyncio.Event()
        g.verdicts._reading.set()
        async with g.stream("c", "hola", tenant="acme", language="es") as s:
            assert await s.push("¿qué") and await s.push(" tal?")
        return [(c.seq, c.language) for c in sent]

    assert asyncio.run(run()) == [(0, "es"), (1, None)]  # chunk 0 carries it; a later chunk with it is refused


def test_the_fail_mode_is_the_tenants():
    g = guard()
    assert g.fail_mode("acme").action is Action.block and g.fail_mode("open").action is Action.allow
    assert g.fail_mode("acme").timed_out and g.fail_mode("acme", "reader_down").reason == "reader_down"
    # observe mode: a silence is decided as the worker decides an Error verdict, observed like any decision
    watched = g.fail_mode("watch")
    assert (watched.action, watched.would_action) == (Action.allow, Action.block)
    shown = as_result(watched)
    assert shown["qwen3guard"]["timed_out"] and shown["qwen3guard"]["observed"] and not shown["flagged"]
    assert shown["qwen3guard"]["would_action"] == "block"
    assert (g.fail_mode("watch-open").action, g.fail_mode("watch-open").would_action) == (Action.allow, Action.allow)


def test_a_silent_chunk_of_an_observed_stream_records_the_stop_it_would_have_been():
    async def run():
        g = guard()
        g.verdicts._reading.set()
        async with g.stream("c", "hi", tenant="watch", stream_id="w", chunk_timeout=0.1) as watched, \
                g.stream("c", "hi", tenant="acme", stream_id="a", chunk_timeout=0.1) as enforced:
            for s in (watched, enforced):
                s._seq = 1
                s._check_deadline(0)  # chunk 0 had no verdict in time
            return watched, enforced

    watched, enforced = asyncio.run(run())
    assert not watched.stopped.is_set() and watched.would_stop_reason == "timeout"
    assert enforced.stopped.is_set() and enforced.stop_reason == "timeout"


def test_openai_shape_of_a_verdict():
    unsafe = Outcome(Action.block, verdict("e", moderate=Moderate.prompt, risk_level=RiskLevel.unsafe,
                                           categories=["Violent", "PII"], probabilities={"Unsafe": 0.9, "Safe": 0.1}))
    result = as_result(unsafe)
    assert result["flagged"] and result["categories"]["violence"] and result["category_scores"]["violence"] == 0.9
    assert sum(result["categories"].values()) == 1  # PII has no OpenAI name: it is in qwen3guard only
    assert result["qwen3guard"]["categories"] == ["Violent", "PII"] and result["qwen3guard"]["action"] == "block"
    late = as_result(Outcome(Action.allow))
    assert not late["flagged"] and late["qwen3guard"]["timed_out"] and not any(late["category_scores"].values())


def test_inputs_that_cannot_be_moderated_are_refused():
    assert texts_of(ModerationRequest(input=[TextPart(type="text", text="a"), TextPart(type="text", text="b")])) == ["a", "b"]
    for bad in ([], [TextPart(type="image_url")], ["x"] * 33):
        with pytest.raises(HTTPException):
            texts_of(ModerationRequest(input=bad))


class Record:
    """What aiokafka hands the reader: a value and its headers."""

    def __init__(self, v: VerdictEvent, headers: bool = True):
        self.value, self.topic, self.offset = v.model_dump_json().encode(), "verdicts", 0
        self.headers = [(FOR_HEADER, v.answers())] if headers else []


def test_the_reader_decodes_only_what_someone_waits_for(monkeypatch):
    """A gateway sharing its reply partition parses only its own: the `guardstream-for` header says whom
    each one answers. A record without it (a worker older than the header) is parsed as before."""
    parsed = []
    real = VerdictEvent.model_validate_json
    monkeypatch.setattr(VerdictEvent, "model_validate_json", lambda value: parsed.append(value) or real(value))

    async def run():
        g = guard()
        with g.verdicts.expect(("acme", "c", "e1"), NONCE) as mine:
            stream = StreamPosition(stream_id="s1", seq=0, token_offset=0, token_count=1)
            for foreign in (verdict("e1", tenant="other"), verdict("e2"), verdict("e1", stream=stream)):
                g.verdicts._take(Record(foreign))
            assert parsed == [] and not mine.done()
            g.verdicts._take(Record(verdict("e3"), headers=False))  # no header: parsed, and not ours
            assert len(parsed) == 1 and not mine.done()
            g.verdicts._take(Record(verdict("e1", action=Action.block, nonce=NONCE)))
        return mine.result(), g.read

    found, read = asyncio.run(run())
    assert found.action is Action.block and read["records"] == 5 and read["decoded"] == 2


def test_a_reply_partition_is_named_on_every_request_and_must_exist():
    with pytest.raises(ValueError, match="reply partition 40 is not one of the replies topic's 32"):
        Guard("unused:9092", Settings.load({}), reply_partition=40)
    assert Guard("unused:9092", Settings.load({}, reply_partition=7)).reply_partition == 7
    sent = []

    class Producer:
        async def send(self, topic, value, key):
            sent.append(value)
            return asyncio.sleep(0)

    async def run():
        g = Guard("unused:9092", Settings.load({}), reply_partition=7)
        g._producer = Producer()
        await g._send("conversations", conversation("c", "acme", "hi"))

    asyncio.run(run())
    assert b'"reply_to":7' in sent[0]
