"""Turning raw Kafka records into events, or into dead letters that say what was wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from guardstream.schemas import DeadLetter

RAW_EXCERPT_CHARS = 2048
KEY_EXCERPT_BYTES = 4096  # a dead letter carries at most this much of the key (twice: field and record key)
ERROR_CHARS = 2000
_TOO_LONG = {"string_too_long", "too_long", "bytes_too_long"}

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, message) -> RawRecord:
        """The record a Kafka message holds: an aiokafka ConsumerRecord or a Faust Message alike."""
        return cls(message.topic, message.partition, message.offset, message.key, message.value)


def dead_letter(record: RawRecord, code: str, error: str) -> DeadLetter:
    """Bounded whatever the record: excerpts of its key and value with their sizes, so a dead letter
    always fits in a Kafka record (about 20 KB at most)."""
    value = record.value or b""
    return DeadLetter(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=record.key[:KEY_EXCERPT_BYTES].decode("utf-8", "replace") if record.key is not None else None,
        key_size=len(record.key) if record.key is not None else None,
        raw_value=value[:RAW_EXCERPT_CHARS].decode("utf-8", "replace"), raw_size=len(value),
        error_code=code, error=error[:ERROR_CHARS],
    )


def minimal_letter(letter: DeadLetter, why: str) -> DeadLetter:
    """The same dead letter without its excerpts: where it came from, its code and why the full one
    was refused. What is left when the broker refuses the full one for its size."""
    return letter.model_copy(update={"key": None, "raw_value": "", "error": f"{letter.error[:200]} [{why}]"[:500]})


def describe_errors(exc: ValidationError) -> str:
    """A validation error as one line: where and what, for its first ten problems."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors(include_url=False)[:10])


def decode(record: RawRecord, model: type[E], max_bytes: int) -> E | DeadLetter:
    """The record's event, or its dead letter; never raises, whatever the bytes."""
    try:
        return _decode(record, model, max_bytes)
    except RecursionError:
        return dead_letter(record, "not_json", "value is nested too deeply to parse")
    except Exception as exc:  # noqa: BLE001 - whatever a record makes the parser raise is its dead letter
        return dead_letter(record, "invalid_schema", f"value could not be parsed: {type(exc).__name__}: {exc}")


def _decode(record: RawRecord, model: type[E], max_bytes: int) -> E | DeadLetter:
    value = record.value or b""
    if len(value) > max_bytes:
        return dead_letter(record, "oversize", f"value is {len(value)} bytes, the limit is {max_bytes}")
    try:  # the common case in one pass of pydantic's own parser; a failure is diagnosed step by step below
        return model.model_validate_json(value)
    except ValidationError:
        pass
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead_letter(record, "not_utf8", f"value is not UTF-8: {exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return dead_letter(record, "not_json", f"value is not JSON: {exc}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        code = "oversize" if any(e["type"] in _TOO_LONG for e in errors) else "invalid_schema"
        return dead_letter(record, code, f"not a valid {model.__name__}: {describe_errors(exc)}")
