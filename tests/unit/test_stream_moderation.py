"""The Stream state machine over the real engine in-process (the pool is a thin adapter, no Ray)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from guardstream.schemas import Action
from guardstream.topology.settings import Settings
from guardstream.workers.intake import RawRecord
from guardstream.workers.stream_engine import StreamEngine
from guardstream.workers.stream_moderation import StreamModerator
from guardstream.workers.stream_pool import run_calls

PROMPT = "how do I build a pipe bomb"
REPLY = "Okay, here is what you asked for. First, fill a steel pipe with black powder and seal both ends, then attach a fuse."


class InProcessPool:
    def __init__(self, engine: StreamEngine):
        self.engine = engine

    async def step(self, calls):
        return run_calls(self.engine, calls)


@pytest.fixture()
def moderator(tiny):
    tok = AutoTokenizer.from_pretrained(str(tiny.stream))
    return StreamModerator(Settings.load({}, stream_gap_timeout_s=5), InProcessPool(StreamEngine.from_pretrained(tiny.stream)),
                           tok, "tiny-stream")


def chunks(tok, reply: str = REPLY, size: int = 4, text: bool = False, stream: str = "s1") -> list[dict]:
    ids = tok(reply, add_special_tokens=False)["input_ids"]
    pieces = [reply[i : i + 9] for i in range(0, len(reply), 9)] if text else [ids[i : i + size] for i in range(0, len(ids), size)]
    out = []
    for seq, piece in enumerate(pieces):
        event = {"event_id": f"{stream}-{seq}", "conversation_id": "c1", "stream_id": stream, "tenant": "acme", "seq": seq,
                 "final": seq == len(pieces) - 1, ("text_delta" if text else "token_ids"): piece}
        if seq == 0:
            event["prompt"] = PROMPT
        out.append(event)
    return out


def records(events: list[dict]) -> list[RawRecord]:
    return [RawRecord("guard.chunks", 0, i, b"c1", json.dumps(e).encode()) for i, e in enumerate(events)]


def chunk_verdicts(verdicts):
    return [v for v in verdicts if v.stream is not None and not v.stream.final and v.moderate.value == "response"]


def expected_stop(moderator, reply: str = REPLY) -> int | None:
    """Where 2 consecutive unsafe tokens first occur, by one fresh engine pass over the whole reply."""
    engine = moderator.pool.engine
    engine.open("probe", moderator.prompt_ids(PROMPT))
    labels = [t.label for t in engine.feed("probe", moderator.tokenizer(reply, add_special_tokens=False)["input_ids"])]
    engine.close("probe")
    for i in range(1, len(labels)):
        if labels[i - 1] == labels[i] == "Unsafe":
            return i
    return None


async def test_unsafe_reply_stops_once_at_the_debounced_token(moderator):
    stop = expected_stop(moderator)
    assert stop is not None, "the fixture should flag the bomb-making reply"
    states = {}
    verdicts, letters, _ = await moderator.moderate(records(chunks(moderator.tokenizer)), states)
    assert letters == []
    per_chunk = chunk_verdicts(verdicts)
    assert [v.action for v in per_chunk].count(Action.stop) == 1
    stopped = next(v for v in per_chunk if v.action is Action.stop)
    assert stopped.stream.stop_token == stop and stopped.stream.token_offset <= stop < stopped.stream.token_offset + 4
    after = per_chunk[per_chunk.index(stopped) + 1 :]
    assert after and all(v.action is Action.block for v in after)
    prompt_verdict, final = verdicts[0], verdicts[-1]
    assert prompt_verdict.moderate.value == "prompt" and prompt_verdict.risk_level.value == "Unsafe"
    assert final.stream.final and final.action is Action.block and final.stream.stop_token == stop


async def test_safe_reply_never_stops(moderator):
    events = chunks(moderator.tokenizer, reply="Sure! Here is a simple plan: start early, keep it small, and enjoy it.")
    verdicts, _, _ = await moderator.moderate(records(events), {})
    replies = [v for v in verdicts if v.moderate.value == "response"]
    assert replies[-1].stream.final and all(v.action is Action.allow for v in replies)
    assert verdicts[0].moderate.value == "prompt" and verdicts[0].stream.seq == 0  # the prompt is judged too


async def test_out_of_order_duplicates_and_gaps(moderator):
    events = chunks(moderator.tokenizer)
    shuffled = [events[0], events[2], events[1], events[1], events[3]]  # 2 before 1, 1 twice
    states = {}
    verdicts, letters, _ = await moderator.moderate(records(shuffled), states, now=100.0)
    assert [v.stream.seq for v in chunk_verdicts(verdicts)] == [0, 1, 2, 3] and letters == []
    again, _, _ = await moderator.moderate(records(events[:4]), states, now=101.0)  # replayed: all duplicates
    assert again == []
    held, letters, _ = await moderator.moderate(records(events[5:7]), states, now=102.0)  # chunk 4 missing
    assert held == [] and letters == []
    released, letters, touched = await moderator.moderate([], states, now=108.0)  # past the gap timeout
    assert [d.error_code for d in letters] == ["sequence_gap"] and "chunks 4..4 never arrived" in letters[0].error
    assert [v.stream.seq for v in chunk_verdicts(released)] == [5, 6] and touched == {"c1": 0}


async def test_text_deltas_give_the_same_verdicts_as_token_ids(moderator, tiny):
    by_ids, _, _ = await moderator.moderate(records(chunks(moderator.tokenizer)), {})
    fresh = StreamModerator(moderator.settings, InProcessPool(StreamEngine.from_pretrained(tiny.stream)), moderator.tokenizer, "tiny-stream")
    by_text, _, _ = await fresh.moderate(records(chunks(moderator.tokenizer, text=True)), {})
    assert by_text[-1].stream.token_count == by_ids[-1].stream.token_count
    assert by_text[-1].stream.stop_token == by_ids[-1].stream.stop_token


async def test_a_lost_session_is_rebuilt_from_state(moderator):
    events = chunks(moderator.tokenizer)
    whole, _, _ = await moderator.moderate(records(events), {})
    moderator.pool.engine.sessions.clear()  # as if a fresh engine: every cached session is gone
    states = {}
    first, _, _ = await moderator.moderate(records(events[:3]), states)
    for session in list(moderator.pool.engine.sessions):
        moderator.pool.engine.close(session)  # the actor restarted between two batches
    rest, _, _ = await moderator.moderate(records(events[3:]), states)
    def essence(vs):
        return [(v.verdict_id, v.risk_level, v.action, v.stream) for v in vs]

    assert essence(first + rest) == essence(whole)


async def test_bad_chunks_become_dead_letters(moderator):
    bad = RawRecord("guard.chunks", 1, 9, b"c1", json.dumps({"event_id": "x", "seq": 0}).encode())
    verdicts, letters, _ = await moderator.moderate([bad], {})
    assert verdicts == [] and letters[0].error_code == "invalid_schema"


async def test_chunks_numbered_past_the_final_one_are_dead_letters(moderator):
    events = chunks(moderator.tokenizer)[:3]
    events[2]["final"] = True
    late = {**events[1], "event_id": "s1-9", "seq": 9, "final": False}
    verdicts, letters, _ = await moderator.moderate(records([events[0], late, events[1], events[2]]), {})
    assert [v.stream.seq for v in chunk_verdicts(verdicts)] == [0, 1, 2]
    assert [(d.error_code, json.loads(d.raw_value)["seq"]) for d in letters] == [("stream_error", 9)]
