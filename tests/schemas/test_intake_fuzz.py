"""Property tests: whatever bytes arrive, intake returns an event or a dead letter, and never raises."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardstream.schemas import ConversationEvent, DeadLetter, TokenChunkEvent, VerdictEvent
from guardstream.schemas.intake import RawRecord, decode

MODELS = (ConversationEvent, TokenChunkEvent, VerdictEvent)
CONVERSATION = {"event_id": "e-1", "conversation_id": "c-1", "tenant": "acme", "moderate": "prompt",
                "messages": [{"role": "user", "content": "hello"}]}
CHUNK = {"event_id": "r-0", "conversation_id": "c-1", "stream_id": "r", "tenant": "acme", "seq": 0, "prompt": "hi",
         "token_ids": [1, 2, 3]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)


def check(value: bytes, model) -> None:
    outcome = decode(RawRecord("t", 1, 2, b"k", value), model, 4096)
    assert isinstance(outcome, (model, DeadLetter))
    if isinstance(outcome, DeadLetter):
        assert outcome.error and (outcome.topic, outcome.partition, outcome.offset) == ("t", 1, 2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(MODELS))
def test_random_bytes_never_raise(value, model):
    check(value, model)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(CONVERSATION, ConversationEvent), (CHUNK, TokenChunkEvent)]), st.data())
def test_mutated_valid_events_never_raise(base, data):
    event, model = dict(base[0]), base[1]
    for _ in range(data.draw(st.integers(1, 3))):
        field = data.draw(st.sampled_from(sorted(event) + ["extra", "messages"]))
        event[field] = data.draw(json_values)
    check(json.dumps(event).encode(), model)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 50_000), st.sampled_from(["[", "{\"a\":"]))
def test_deeply_nested_json_is_a_dead_letter(depth, opener):
    value = (opener * depth + "1" + ("]" if opener == "[" else "}") * depth).encode()
    outcome = decode(RawRecord("t", 0, 0, None, value), ConversationEvent, 10**6)
    assert isinstance(outcome, DeadLetter)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_ids_with_any_text_are_events_only_when_printable(event_id):
    outcome = decode(RawRecord("t", 0, 0, None, json.dumps({**CONVERSATION, "event_id": event_id}).encode()),
                     ConversationEvent, 4096)
    assert isinstance(outcome, ConversationEvent) == (event_id.isprintable() and len(event_id) <= 128)
