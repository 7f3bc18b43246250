"""The Stream checkpoint's label names by index, as its config.json orders them (the vocabulary
itself is the wire contract's: `schemas/labels.py`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamLabels:
    """Index → name maps read from config.json; their order is the checkpoint's, never ours."""

    response_risk: list[str]
    response_category: list[str]
    query_risk: list[str]
    query_category: list[str]

    @classmethod
    def from_config(cls, config: dict) -> StreamLabels:
        def ordered(key: str, size_key: str) -> list[str]:
            mapping = {int(k): v for k, v in config[key].items()}
            if sorted(mapping) != list(range(config[size_key])):
                raise ValueError(f"config.json: {key} must map 0..{config[size_key] - 1}, got {sorted(mapping)}")
            return [mapping[i] for i in range(config[size_key])]

        return cls(
            response_risk=ordered("response_risk_level_map", "num_risk_level"),
            response_category=ordered("response_category_map", "num_category"),
            query_risk=ordered("query_risk_level_map", "num_query_risk_level"),
            query_category=ordered("query_category_map", "num_query_category"),
        )
