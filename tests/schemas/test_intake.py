import json

import pytest

from guardstream.schemas import ConversationEvent, DeadLetter
from guardstream.schemas.intake import RawRecord, decode

GOOD = {"event_id": "e", "conversation_id": "c", "tenant": "t", "messages": [{"role": "user", "content": "hi"}]}


def record(value: bytes, key: bytes | None = b"c") -> RawRecord:
    return RawRecord("guard.conversations", 2, 41, key, value)


def test_a_valid_record_becomes_an_event():
    assert isinstance(decode(record(json.dumps(GOOD).encode()), ConversationEvent, 10_000), ConversationEvent)


@pytest.mark.parametrize("value, code, fragment", [
    (b"not json at all", "not_json", "not JSON"),
    (b"\xff\xfe\x00bad", "not_utf8", "not UTF-8"),
    (b"[1, 2, 3]", "invalid_schema", "not a valid ConversationEvent"),
    (json.dumps({**GOOD, "messages": []}).encode(), "invalid_schema", "messages"),
    (json.dumps({**GOOD, "messages": [{"role": "robot", "content": "x"}]}).encode(), "invalid_schema", "messages.0.role"),
    (json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 33_000}]}).encode(), "oversize", "at most"),
    (b"{" + b" " * 200_000 + b"}", "oversize", "the limit is 100000"),
])
def test_bad_records_become_dead_letters_with_their_origin(value, code, fragment):
    letter = decode(record(value), ConversationEvent, 100_000)
    assert isinstance(letter, DeadLetter)
    assert (letter.error_code, letter.topic, letter.partition, letter.offset, letter.key) == (code, "guard.conversations", 2, 41, "c")
    assert fragment in letter.error
    assert letter.raw_size == len(value) and len(letter.raw_value) <= 2048


def test_a_dead_letter_is_bounded_whatever_the_key_and_value():
    letter = decode(record(b"{" + b"\xff" * 900_000, key=b"k" * 600_000), ConversationEvent, 1 << 20)
    assert letter.error_code == "not_utf8" and letter.key_size == 600_000 and letter.raw_size == 900_001
    assert len(letter.model_dump_json().encode()) < 64 * 1024  # far below the broker's 1 MiB, key and value capped
