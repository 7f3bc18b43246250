"""The fixture checkpoints' tokenizers, loaded once per test session: Qwen3's full BPE vocabulary
takes seconds to load, and tests only read through it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from transformers import AutoTokenizer


@lru_cache(maxsize=None)
def _load(path: str):
    return AutoTokenizer.from_pretrained(path)


def cached_tokenizer(path: str | Path):
    return _load(str(path))
