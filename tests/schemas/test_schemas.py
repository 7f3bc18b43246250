import json

import pytest
from pydantic import ValidationError

from guardstream.schemas import ConversationEvent, Moderate, TokenChunkEvent, VerdictEvent, content_digest, verdict_id
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


def test_verdict_ids_are_deterministic_and_distinguish_tenant_conversation_event_model_role_content_and_policy():
    hi, bad = content_digest("prompt", [{"role": "user", "content": "hi"}]), content_digest("prompt", [{"role": "user", "content": "bad"}])
    base = ("acme", "c-1", "e-1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt, hi, "acme@1")
    a = verdict_id(*base)
    assert a == verdict_id(*base)
    assert hi == content_digest("prompt", [{"content": "hi", "role": "user"}])  # the same content, however it is ordered
    variants = [("globex", "c-1", "e-1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt, hi, "acme@1"),
                ("acme", "c-2", "e-1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt, hi, "acme@1"),
                ("acme", "c-1", "e-2", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt, hi, "acme@1"),
                ("acme", "c-1", "e-1", "Qwen/Qwen3Guard-Gen-4B", Moderate.prompt, hi, "acme@1"),
                ("acme", "c-1", "e-1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.response, hi, "acme@1"),
                ("acme", "c-1", "e-1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt, bad, "acme@1"),  # a reused event id
                ("acme", "c-1", "e-1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt, hi, "acme@2"),
                ("acme", "c-1", "e-1", "Qwen/Qwen3Guard-Gen-0.6B", Moderate.prompt, hi, None)]
    assert len({a, *(verdict_id(*v) for v in variants)}) == 1 + len(variants)


def test_parts_of_a_derived_id_cannot_be_shifted_into_each_other():
    # "a|b" + "c" against "a" + "b|c": whatever the characters, and ids are printable besides
    assert verdict_id("t", "a\x1fb", "c", "m", Moderate.prompt, "d", None) != \
        verdict_id("t", "a", "b\x1fc", "m", Moderate.prompt, "d", None)
    assert verdict_id("t", 'a", "b', "c", "m", Moderate.prompt, "d", None) != \
        verdict_id("t", "a", 'b", "c', "m", Moderate.prompt, "d", None)
    with pytest.raises(ValidationError, match="U\\+001F"):
        ConversationEvent.model_validate({"event_id": "b\x1fc", "conversation_id": "a", "tenant": "t",
                                          "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("field", ["event_id", "conversation_id", "stream_id"])
@pytest.mark.parametrize("bad", ["\x00", "a\nb", "tab\there", "\x7f", "zero\u200bwidth", "\u2028"])
def test_ids_are_printable_text_without_control_characters(field, bad):
    chunk = {"event_id": "e", "conversation_id": "c", "stream_id": "s", "tenant": "t", "seq": 0, "prompt": "p",
             "token_ids": [1]}
    with pytest.raises(ValidationError, match="must be printable text"):
        TokenChunkEvent.model_validate({**chunk, field: bad})
    assert TokenChunkEvent.model_validate({**chunk, field: "ok id/with spaces é 中"})


def test_verdict_rejects_unknown_risk_levels():
    with pytest.raises(ValidationError):
        VerdictEvent.model_validate({"verdict_id": "v", "source_event_id": "e", "conversation_id": "c", "tenant": "t",
                                     "moderate": "prompt", "model_id": "m", "model_variant": "gen", "risk_level": "Meh",
                                     "action": "allow", "policy": "p", "latency_ms": 1})


@pytest.mark.parametrize("observed, would_action, valid", [
    (False, None, True), (True, "block", True), (True, None, False), (False, "block", False)])
def test_an_observed_verdict_says_what_would_have_been_done_and_only_an_observed_one(observed, would_action, valid):
    fields = {"verdict_id": "v", "source_event_id": "e", "conversation_id": "c", "tenant": "t", "moderate": "prompt",
              "model_id": "m", "model_variant": "gen", "risk_level": "Unsafe", "action": "allow", "policy": "p",
              "latency_ms": 1, "observed": observed, "would_action": would_action}
    if valid:
        assert VerdictEvent.model_validate(fields).observed is observed
    else:
        with pytest.raises(ValidationError, match="observed and would_action go together"):
            VerdictEvent.model_validate(fields)


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
