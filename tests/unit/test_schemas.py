import json

import pytest
from pydantic import ValidationError

from guardstream.schemas import ConversationEvent, Moderate, TokenChunkEvent, VerdictEvent, verdict_id
from guardstream.schemas.export import WIRE_MODELS, export_json_schemas


def conversation(**overrides) -> dict:
    event = {"event_id": "e1", "conversation_id": "c1", "tenant": "acme",
             "messages": [{"role": "user", "content": "hello"}]}
    return {**event, **overrides}


def test_prompt_event_round_trips_through_json():
    event = ConversationEvent.model_validate(conversation())
    again = ConversationEvent.model_validate_json(event.model_dump_json())
    assert again == event and again.moderate is Moderate.prompt and again.schema_version == 1


@pytest.mark.parametrize("bad, fragment", [
    (conversation(colour="blue"), "Extra inputs are not permitted"),
    (conversation(messages=[]), "at least 1 item"),
    (conversation(messages=[{"role": "system", "content": "x"}]), "'user' or 'assistant'"),
    (conversation(moderate="response"), "last message to be from 'assistant'"),
    (conversation(moderate="response", messages=[{"role": "assistant", "content": "hi"}]), "needs the user turn"),
    (conversation(tenant="acme|evil"), "String should match pattern"),
    (conversation(schema_version=2), "Input should be 1"),
    (conversation(messages=[{"role": "user", "content": "x" * 40_000}]), "at most 32000 characters"),
])
def test_invalid_conversations_say_what_is_wrong(bad, fragment):
    with pytest.raises(ValidationError, match=fragment):
        ConversationEvent.model_validate(bad)


def test_chunk_needs_exactly_one_payload():
    base = {"event_id": "e", "conversation_id": "c", "stream_id": "s", "tenant": "t", "seq": 0, "prompt": "hi"}
    assert TokenChunkEvent.model_validate({**base, "token_ids": [1, 2]}).token_ids == [1, 2]
    assert TokenChunkEvent.model_validate({**base, "text_delta": "hi"}).text_delta == "hi"
    for payload in ({}, {"token_ids": [1], "text_delta": "x"}):
        with pytest.raises(ValidationError, match="exactly one of token_ids or text_delta"):
            TokenChunkEvent.model_validate({**base, **payload})


def test_verdict_ids_are_deterministic_and_distinguish_model_and_role():
    a = verdict_id("e1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt)
    assert a == verdict_id("e1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt)
    assert len({a, verdict_id("e1", "Qwen/Qwen3Guard-Gen-4B", Moderate.prompt),
                verdict_id("e1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.response), verdict_id("e2", "m", Moderate.prompt)}) == 4


def test_verdict_rejects_unknown_risk_levels():
    with pytest.raises(ValidationError):
        VerdictEvent.model_validate({"verdict_id": "v", "source_event_id": "e", "conversation_id": "c", "tenant": "t",
                                     "moderate": "prompt", "model_id": "m", "model_variant": "gen", "risk_level": "Meh",
                                     "action": "allow", "policy": "p", "latency_ms": 1})


def test_schema_export_writes_one_json_schema_per_wire_model(tmp_path):
    paths = export_json_schemas(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{m.__name__}.schema.json" for m in WIRE_MODELS)
    schema = json.loads((tmp_path / "ConversationEvent.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert {"event_id", "conversation_id", "tenant", "messages"} <= set(schema["required"])


def test_chunk_zero_carries_the_prompt_and_only_it():
    base = {"event_id": "e", "conversation_id": "c", "stream_id": "s", "tenant": "t", "token_ids": [1]}
    with pytest.raises(ValidationError, match="chunk 0 carries the user prompt"):
        TokenChunkEvent.model_validate({**base, "seq": 0})
    with pytest.raises(ValidationError, match="chunk 0 carries the user prompt"):
        TokenChunkEvent.model_validate({**base, "seq": 3, "prompt": "hi"})
    with pytest.raises(ValidationError):
        TokenChunkEvent.model_validate({**base, "seq": 1, "role": "user"})
