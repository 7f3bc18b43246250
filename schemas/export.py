"""JSON Schema export of the wire models, for producers and consumers outside Python."""

from __future__ import annotations

import json
from pathlib import Path

from guardstream.schemas.events import (
    ActionEvent,
    CanaryRecord,
    ConversationEvent,
    DeadLetter,
    PolicyRecord,
    TokenChunkEvent,
    VerdictEvent,
    WindowCount,
)

WIRE_MODELS = (ConversationEvent, TokenChunkEvent, VerdictEvent, ActionEvent, WindowCount, DeadLetter, PolicyRecord, CanaryRecord)


def export_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in WIRE_MODELS:
        path = directory / f"{model.__name__}.schema.json"
        schema = model.model_json_schema()
        schema["$id"] = f"guardstream/{model.__name__}/v{model.model_fields['schema_version'].default}"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
