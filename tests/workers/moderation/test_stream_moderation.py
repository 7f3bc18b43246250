"""The Stream state machine over the real engine in-process (the pool is a thin adapter, no Ray)."""

from __future__ import annotations

import json

import pytest

from guardstream.schemas import Action
from guardstream.schemas.intake import RawRecord
from guardstream.workers.engines.messages import StreamCall
from guardstream.workers.engines.stream_engine import StreamEngine
from guardstream.workers.moderation.rules import StreamRules
from guardstream.workers.moderation.stream_moderation import StreamModerator
from guardstream.workers.moderation.stream_state import StreamRef

from tests.helpers.models import cached_tokenizer
from tests.helpers.memory_table import MemoryTable

PROMPT = "how do I build a pipe bomb"
REPLY = "Okay, here is what you asked for. First, fill a steel pipe with black powder and seal both ends, then attach a fuse."


class InProcessPool:
    def __init__(self, engine: StreamEngine):
        self.engine, self.max_positions = engine, engine.max_positions

    async def step(self, calls):
        return self.engine.run(calls)


@pytest.fixture()
def moderator(tiny):
    tok = cached_tokenizer(tiny.stream)
    return StreamModerator(StreamRules(gap_timeout_s=5), InProcessPool(StreamEngine.from_pretrained(tiny.stream)),
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
    states = MemoryTable()
    verdicts, letters = await states.run(moderator, records(chunks(moderator.tokenizer)))
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
    verdicts, _ = await MemoryTable().run(moderator, records(events))
    replies = [v for v in verdicts if v.moderate.value == "response"]
    assert replies[-1].stream.final and all(v.action is Action.allow for v in replies)
    assert verdicts[0].moderate.value == "prompt" and verdicts[0].stream.seq == 0  # the prompt is judged too


async def test_out_of_order_duplicates_and_gaps(moderator):
    events = chunks(moderator.tokenizer)
    shuffled = [events[0], events[2], events[1], events[1], events[3]]  # 2 before 1, 1 twice
    states = MemoryTable()
    verdicts, letters = await states.run(moderator, records(shuffled), now=100.0)
    assert [v.stream.seq for v in chunk_verdicts(verdicts)] == [0, 1, 2, 3] and letters == []
    again, _ = await states.run(moderator, records(events[:4]), now=101.0)  # replayed: all duplicates
    assert again == []
    held, letters = await states.run(moderator, records(events[5:7]), now=102.0)  # chunk 4 missing
    assert held == [] and letters == []
    waiting = StreamRef("acme", "c1", "s1")
    assert states[waiting.key()]["held"] == [5, 6] and waiting.held_key(5) in states
    released, letters = await states.run(moderator, [], [waiting], now=108.0)  # past the gap timeout
    assert [d.error_code for d in letters] == ["sequence_gap"] and "chunks 4..4 never arrived" in letters[0].error
    assert [v.stream.seq for v in chunk_verdicts(released)] == [5, 6]
    assert states[waiting.key()]["held"] == [] and not [k for k in states if k.startswith('["held"')]
    late, letters = await states.run(moderator, records(events[3:5]), now=109.0)  # 3 is a duplicate; 4 came too late
    assert late == [] and [(d.error_code, d.offset) for d in letters] == [("sequence_gap", 1)]  # events[4]'s record
    assert "chunk 4 of stream s1 arrived after its gap was reported" in letters[0].error


async def test_text_deltas_give_the_same_verdicts_as_token_ids(moderator, tiny):
    by_ids, _ = await MemoryTable().run(moderator, records(chunks(moderator.tokenizer)))
    fresh = StreamModerator(moderator.rules, InProcessPool(StreamEngine.from_pretrained(tiny.stream)), moderator.tokenizer, "tiny-stream")
    by_text, _ = await MemoryTable().run(fresh, records(chunks(moderator.tokenizer, text=True)))
    assert by_text[-1].stream.token_count == by_ids[-1].stream.token_count
    assert by_text[-1].stream.stop_token == by_ids[-1].stream.stop_token


async def test_a_lost_session_is_rebuilt_from_state(moderator):
    events = chunks(moderator.tokenizer)
    whole, _ = await MemoryTable().run(moderator, records(events))
    moderator.pool.engine.sessions.clear()  # as if a fresh engine: every cached session is gone
    states = MemoryTable()
    first, _ = await states.run(moderator, records(events[:3]))
    for session in list(moderator.pool.engine.sessions):
        moderator.pool.engine.close(session)  # the actor restarted between two batches
    rest, _ = await states.run(moderator, records(events[3:]))
    def essence(vs):
        return [(v.verdict_id, v.risk_level, v.action, v.stream) for v in vs]

    assert essence(first + rest) == essence(whole)


async def test_bad_chunks_become_dead_letters(moderator):
    bad = RawRecord("guard.chunks", 1, 9, b"c1", json.dumps({"event_id": "x", "seq": 0}).encode())
    verdicts, letters = await MemoryTable().run(moderator, [bad])
    assert verdicts == [] and letters[0].error_code == "invalid_schema"


async def test_chunks_numbered_past_the_final_one_are_dead_letters(moderator):
    events = chunks(moderator.tokenizer)[:3]
    events[2]["final"] = True
    late = {**events[1], "event_id": "s1-9", "seq": 9, "final": False}
    verdicts, letters = await MemoryTable().run(moderator, records([events[0], late, events[1], events[2]]))
    assert [v.stream.seq for v in chunk_verdicts(verdicts)] == [0, 1, 2]
    assert [(d.error_code, json.loads(d.raw_value)["seq"]) for d in letters] == [("stream_error", 9)]


def other(events: list[dict], stream: str, conversation: str = "c1", tenant: str = "acme") -> list[dict]:
    return [{**e, "event_id": f"{stream}-{e['seq']}", "stream_id": stream, "conversation_id": conversation,
             "tenant": tenant} for e in events]


def essence(vs):
    return [(v.verdict_id, v.risk_level, v.action, v.stream) for v in vs]


async def test_token_ids_outside_the_vocabulary_are_dead_letters_and_never_reach_the_engine(moderator):
    events = chunks(moderator.tokenizer)
    poisoned = other(events, "bad")
    poisoned[1]["token_ids"] = [5, len(moderator.tokenizer) + 7]
    verdicts, letters = await MemoryTable().run(moderator, records(poisoned[:3]))
    assert [(d.error_code, d.offset) for d in letters] == [("stream_error", 1)]
    assert "outside the checkpoint's vocabulary" in letters[0].error
    assert [v.stream.seq for v in chunk_verdicts(verdicts)] == [0]  # chunk 2 waits behind the gap


def test_a_session_the_engine_fails_on_gets_an_error_alone_and_its_batch_mates_their_solo_answers(moderator):
    """At the engine: a poisoned call (an id the embedding cannot index) batched with healthy ones."""
    engine, prompt = moderator.pool.engine, moderator.prompt_ids(PROMPT)
    ids = moderator.tokenizer(REPLY, add_special_tokens=False)["input_ids"]
    healthy = [StreamCall(f"h{i}", ids[i: i + 6], prompt_ids=prompt) for i in range(3)]
    alone = [engine.run([call])[0] for call in healthy]
    for call in healthy:
        engine.close(call.session)
    poison = StreamCall("poison", [3, 10**7], prompt_ids=prompt)
    together = engine.run(healthy[:2] + [poison] + healthy[2:])
    assert [(a.session, a.query, a.tokens, a.error) for a in together if a.session != "poison"] == \
           [(a.session, a.query, a.tokens, a.error) for a in alone]
    assert together[2].error and "IndexError" in together[2].error and "poison" not in engine.sessions
    # the healthy sessions go on from where they were: the failed batch was rolled back
    follow = engine.run([StreamCall("h0", ids[6:9], judged=6)])[0]
    assert not follow.missing
    engine.open("fresh", prompt)
    for got, want in zip(follow.tokens, engine.feed("fresh", ids[0:9])[6:], strict=True):
        assert (got.label, got.category) == (want.label, want.category)
        assert all(abs(got.probabilities[k] - want.probabilities[k]) <= 1e-4 for k in want.probabilities)


async def test_an_engine_failure_fails_only_its_own_stream(moderator):
    class PoisonOnce(InProcessPool):
        """The in-process pool, but the engine raises whenever the poisoned session is in a batch."""

        def __init__(self, engine):
            super().__init__(engine)
            self.engine = engine

        async def step(self, calls):
            original = self.engine.step

            def step(chunks):
                if any("poisoned" in c.session for c in chunks):
                    raise RuntimeError("kernel failed")
                return original(chunks)

            self.engine.step = step
            try:
                return self.engine.run(calls)
            finally:
                self.engine.step = original

    events = chunks(moderator.tokenizer)
    alone, _ = await MemoryTable().run(moderator, records(events))
    moderator.pool.engine.sessions.clear()
    moderator.pool = PoisonOnce(moderator.pool.engine)
    mixed = [e for pair in zip(events, other(events, "poisoned")) for e in pair]
    verdicts, letters = await MemoryTable().run(moderator, records(mixed))
    mine = [v for v in verdicts if v.stream.stream_id == "s1"]
    assert essence(mine) == essence(alone) and letters == []
    poisoned = [v for v in verdicts if v.stream.stream_id == "poisoned"]
    assert poisoned and all(v.risk_level.value == "Error" and "kernel failed" in v.error for v in poisoned)


async def test_streams_are_scoped_by_tenant_and_keys_cannot_collide(moderator):
    events = chunks(moderator.tokenizer)
    alone, _ = await MemoryTable().run(moderator, records(events))
    moderator.pool.engine.sessions.clear()
    twin = other(events, "s1", tenant="globex")  # same conversation, stream and event ids, another tenant
    states = MemoryTable()
    verdicts, letters = await states.run(moderator, records([e for pair in zip(events, twin) for e in pair]))
    assert letters == [] and len(states.streams()) == 2
    by_tenant = {t: [v for v in verdicts if v.tenant == t] for t in ("acme", "globex")}
    assert essence(by_tenant["acme"]) == essence(alone)
    assert [(v.risk_level, v.action, v.stream) for v in by_tenant["globex"]] == \
           [(v.risk_level, v.action, v.stream) for v in alone]
    assert not {v.verdict_id for v in by_tenant["acme"]} & {v.verdict_id for v in by_tenant["globex"]}
    shifted = other(events, "b", conversation="a/")  # "a/" + "b" against "a" + "/b"
    split = other(events, "/b", conversation="a")
    states = MemoryTable()
    await states.run(moderator, records(shifted[:2] + split[:2]))
    assert len(states.streams()) == 2 and len(moderator.pool.engine.sessions) == 2


@pytest.mark.parametrize("tenant_policy, chunk_actions, final_action", [
    ({}, {"allow", "stop", "block"}, "block"),
    ({"unsafe_action": "review"}, {"allow", "review"}, "review"),
    ({"category_actions": "every category: review"}, {"allow", "review"}, "review"),
    ({"category_actions": "every category: allow"}, {"allow"}, "allow"),
])
async def test_stream_actions_follow_the_tenants_policy_as_gen_does(tiny, tenant_policy, chunk_actions, final_action):
    from guardstream.wire.policy import PoliciesInForce, Policy

    engine = StreamEngine.from_pretrained(tiny.stream)
    if tenant_policy.get("category_actions"):
        action = tenant_policy["category_actions"].rsplit(" ", 1)[1]
        tenant_policy = {"category_actions": {c: action for c in engine.response_heads.category_names if c != "None"}}
    policy = Policy.model_validate({"default": tenant_policy})
    tok = cached_tokenizer(tiny.stream)
    moderator = StreamModerator(StreamRules(policies=PoliciesInForce(policy)), InProcessPool(engine), tok, "tiny-stream")
    verdicts, _ = await MemoryTable().run(moderator, records(chunks(tok)))
    assert {v.action.value for v in chunk_verdicts(verdicts)} == chunk_actions
    final = [v for v in verdicts if v.stream.final]
    assert [v.action.value for v in final] == [final_action]
    stops = [v for v in chunk_verdicts(verdicts) if v.action.value == "stop"]
    assert len(stops) == (1 if final_action == "block" else 0)


@pytest.mark.parametrize("limit", ["stream_max_tokens", "model positions"])
@pytest.mark.parametrize("too_long_action, final_action", [("block", "stop"), ("review", "review"), ("allow", "allow")])
async def test_a_stream_past_its_limit_ends_with_a_letter_and_a_final_verdict_the_policy_decides(
        tiny, limit, too_long_action, final_action):
    from guardstream.wire.policy import PoliciesInForce, Policy

    tok = cached_tokenizer(tiny.stream)
    engine = StreamEngine.from_pretrained(tiny.stream)
    policy = Policy.model_validate({"default": {"too_long_action": too_long_action}})
    rules = StreamRules(policies=PoliciesInForce(policy), **({"max_tokens": 10} if limit == "stream_max_tokens" else {}))
    moderator = StreamModerator(rules, InProcessPool(engine), tok, "tiny-stream")
    if limit == "model positions":  # room for the prompt and 10 reply tokens
        moderator.sequencer.max_positions = engine.max_positions = len(moderator.prompt_ids(PROMPT)) + 10
    events = chunks(tok)  # 4 tokens a chunk: chunk 2 would pass 10
    verdicts, letters = await MemoryTable().run(moderator, records(events))
    assert [v.stream.seq for v in chunk_verdicts(verdicts)] == [0, 1]
    assert all(v.action is not Action.stop for v in chunk_verdicts(verdicts))  # the model would stop it later
    final = [v for v in verdicts if v.stream.final]
    assert len(final) == 1 and final[0].source_event_id == "s1-2" and "stream too long" in final[0].error
    assert ("stream_max_tokens (10)" if limit == "stream_max_tokens" else "positions less the prompt's") in final[0].error
    assert final[0].action.value == final_action and final[0].stream.token_count == 8
    assert final[0].stream.stop_token == (8 if final_action == "stop" else None)
    assert [(d.error_code, json.loads(d.raw_value)["seq"]) for d in letters][0] == ("stream_error", 2)
    assert all(d.error_code == "stream_error" for d in letters) and len(letters) == len(events) - 2


async def test_a_streams_language_is_its_first_chunks_else_its_prompts_told_off_the_loop_and_kept_in_its_state(tiny):
    """The detector is asked once a batch, for the new streams that named no language, in a thread:
    its process may be slow or hung, and the event loop must go on meanwhile."""
    import threading

    asked = []

    class Detector:
        def languages_of(self, texts: list[str]) -> list[str | None]:
            asked.append((texts, threading.current_thread() is threading.main_thread()))
            return [{PROMPT: "en", "hola": "es"}.get(text) for text in texts]

    tok = cached_tokenizer(tiny.stream)
    moderator = StreamModerator(StreamRules(detector=Detector()), InProcessPool(StreamEngine.from_pretrained(tiny.stream)),
                                tok, "tiny-stream")
    named, told = chunks(tok, stream="named")[:2], chunks(tok, stream="told")[:2]
    named[0]["language"], told[0]["prompt"] = "pt-BR", "hola"
    table = MemoryTable()
    verdicts, _ = await table.run(moderator, records(named + told))
    assert {(v.stream.stream_id, v.language) for v in verdicts} == {("named", "pt-BR"), ("told", "es")}
    assert asked == [(["hola"], False)]  # the producer's language is not asked for, and not on the loop's thread
    later, _ = await table.run(moderator, records(chunks(tok, stream="named")[2:3]))
    assert [v.language for v in later] == ["pt-BR"] and len(asked) == 1  # read back from the state, not told again
    misplaced, letters = await table.run(moderator, records([{**chunks(tok, stream="named")[3], "language": "es"}]))
    assert misplaced == [] and "chunk 0 carries the stream's language" in letters[0].error


async def test_a_prompt_longer_than_the_model_is_never_sent_to_it(tiny):
    tok = cached_tokenizer(tiny.stream)
    engine = StreamEngine.from_pretrained(tiny.stream)
    moderator = StreamModerator(StreamRules(), InProcessPool(engine), tok, "tiny-stream")
    events = chunks(tok)
    events[0]["prompt"] = "word " * engine.max_positions
    verdicts, letters = await MemoryTable().run(moderator, records(events))
    assert [v.stream.final for v in verdicts] == [True] and verdicts[0].action is Action.stop
    assert "positions less the prompt's" in verdicts[0].error and not engine.sessions
    assert len(letters) == len(events) and {d.error_code for d in letters} == {"stream_error"}


async def test_healthy_streams_batched_with_poisoned_ones_get_their_solo_verdicts(tiny):
    tok = cached_tokenizer(tiny.stream)
    ids = tok(REPLY, add_special_tokens=False)["input_ids"]

    def fresh() -> StreamModerator:
        return StreamModerator(StreamRules(max_tokens=len(ids) + 4),
                               InProcessPool(StreamEngine.from_pretrained(tiny.stream)), tok, "tiny-stream")

    healthy = chunks(tok) + other(chunks(tok, size=3), "s2")
    alone, _ = await MemoryTable().run(fresh(), records(healthy))
    out_of_vocabulary = other(chunks(tok), "oov")
    out_of_vocabulary[2]["token_ids"] = [1, len(tok) + 3]
    oversized = other(chunks(tok), "big")
    oversized[1]["token_ids"] = [7] * 5000
    too_long = other(chunks(tok, reply=REPLY * 3), "long")
    poisoned = out_of_vocabulary + oversized + too_long
    mixed = [e for group in zip(healthy, poisoned) for e in group] + healthy[len(poisoned):] + poisoned[len(healthy):]
    verdicts, letters = await MemoryTable().run(fresh(), records(mixed))
    assert essence([v for v in verdicts if v.stream.stream_id in ("s1", "s2")]) == essence(alone)
    assert {d.error_code for d in letters} == {"stream_error", "oversize"}
    assert any("too long" in (v.error or "") for v in verdicts if v.stream.stream_id == "long" and v.stream.final)


async def test_a_step_retried_after_its_delivery_failed_is_not_fed_twice(moderator):
    """Outcomes retries a batch from the table's state while the actor already took its tokens: the
    actor sees the session is ahead of the caller and has it rebuilt, so the verdicts do not change."""
    events = chunks(moderator.tokenizer)
    states = MemoryTable()
    await states.run(moderator, records(events[:3]))
    before = MemoryTable(states)
    first, _ = await states.run(moderator, records(events[3:6]))
    retried, _ = await before.run(moderator, records(events[3:6]))  # delivery failed: state not advanced
    assert essence(retried) == essence(first)
    for again, once in zip(retried, first, strict=True):
        assert again.probabilities.keys() == once.probabilities.keys()
        assert all(abs(again.probabilities[k] - once.probabilities[k]) <= 1e-4 for k in once.probabilities)


async def test_each_chunk_writes_only_what_it_adds_and_a_finished_stream_keeps_only_its_state(moderator):
    long = " ".join([REPLY] * 12)
    events = chunks(moderator.tokenizer, reply=long, size=2)
    table, written = MemoryTable(), []
    for event in events:  # one chunk a batch, as a live stream arrives
        staged_before = dict(table)
        await table.run(moderator, records([event]))
        written.append(sum(len(json.dumps(v)) for k, v in table.items() if staged_before.get(k) != v))
    assert len(events) > 150
    assert max(written[1:-1]) <= 1.2 * written[1]  # bounded per chunk, not growing with the stream
    assert table.streams() == list(table)  # the ids entries left with the final chunk


async def test_a_chunk_too_far_ahead_of_a_gap_is_a_dead_letter_and_held_chunks_are_bounded(tiny):
    tok = cached_tokenizer(tiny.stream)
    moderator = StreamModerator(StreamRules(max_held_chunks=3), InProcessPool(StreamEngine.from_pretrained(tiny.stream)),
                                tok, "tiny-stream")
    events = chunks(tok)
    table = MemoryTable()
    verdicts, _ = await table.run(moderator, records([events[0]]))
    assert [v.stream.seq for v in chunk_verdicts(verdicts)] == [0]
    verdicts, letters = await table.run(moderator, records([events[2], events[3], events[4]]))
    assert verdicts == []
    assert [(d.error_code, json.loads(d.raw_value)["seq"]) for d in letters] == [("stream_error", 4)]
    assert "3 or more ahead of chunk 1, the next expected" in letters[0].error
    assert table[StreamRef("acme", "c1", "s1").key()]["held"] == [2, 3]


async def test_a_gap_times_out_while_the_timer_keeps_checking_and_restarts_when_partitions_move(moderator):
    """The timer re-checks a held stream every second: that must not restart its wait. A worker that
    takes the partition over waits afresh, since the replay may still bring the missing chunk."""
    events = chunks(moderator.tokenizer)  # gap timeout 5 s
    ref = StreamRef("acme", "c1", "s1")
    table = MemoryTable()
    await table.run(moderator, records([events[0], events[2]]), now=100.0)  # chunk 1 missing
    for tick in range(101, 105):
        verdicts, letters = await table.run(moderator, [], [ref], now=float(tick))
        assert verdicts == [] and letters == [] and table.last_writes == {}  # nothing changed: nothing written
    verdicts, letters = await table.run(moderator, [], [ref], now=105.5)
    assert [d.error_code for d in letters] == ["sequence_gap"] and [v.stream.seq for v in chunk_verdicts(verdicts)] == [2]

    table = MemoryTable()
    await table.run(moderator, records([events[0], events[2]]), now=100.0)
    verdicts, letters = await table.run(moderator, [], [ref], now=200.0, waits_from=199.0)  # taken over at 199
    assert verdicts == [] and letters == []
    verdicts, letters = await table.run(moderator, records([events[1]]), now=201.0, waits_from=199.0)  # replayed
    assert letters == [] and [v.stream.seq for v in chunk_verdicts(verdicts)] == [1, 2]


async def test_idle_streams_leave_the_table_with_all_their_entries_and_finished_ones_wait_their_ttl(moderator):
    from guardstream.workers.moderation.stream_state import idle_entries

    events = chunks(moderator.tokenizer)
    table = MemoryTable()
    await table.run(moderator, records(events), now=100.0)  # finished at 100
    await table.run(moderator, records(other(events[:3], "open")), now=100.0)  # still open
    await table.run(moderator, records(other([events[0], events[2]], "gapped")), now=100.0)  # holds chunk 2
    items = [(key, 0, value) for key, value in table.items()]
    assert idle_entries(items, horizon=100.0) == {}  # nothing idle yet: the finished stream recognises late duplicates
    gone = idle_entries(items, horizon=101.0)
    assert set(gone) >= {StreamRef("acme", "c1", "s1").key(), StreamRef("acme", "c1", "open").key(),
                         StreamRef("acme", "c1", "open").ids_key(0), StreamRef("acme", "c1", "open").prompt_key()}
    assert all(v == (-1, None) for v in gone.values())
    assert {k for k in table if k in gone} == {k for k in table if '"gapped"' not in k}  # the gapped stream stays whole
