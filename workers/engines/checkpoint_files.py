"""Where a checkpoint's files are, and what its small JSON files say, without torch or transformers:
the worker's process reads them too, and importing either costs it seconds at each start."""

from __future__ import annotations

import json
from pathlib import Path


WHOLE = ("*.json", "*.safetensors", "*.txt", "*.jinja")  # what the engines read
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "*.jinja")  # what a tokenizer reads


def checkpoint_dir(path: str | Path, files: tuple[str, ...] = WHOLE) -> Path:
    """A local checkpoint directory, or the local snapshot of a hub id with the `files` asked for
    (downloaded on first use): the worker's process, which reads only small files, never fetches
    the weights its actors load."""
    path = Path(path)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(path), allow_patterns=list(files)))
    return path


def checkpoint_config(path: str | Path) -> dict:
    """The model's config.json."""
    return json.loads((checkpoint_dir(path, ("config.json",)) / "config.json").read_text())


def special_token_id(path: str | Path, token: str) -> int:
    """The id of one of the tokenizer's added (special) tokens, read from its files: loading the
    whole BPE vocabulary to look up one marker costs seconds."""
    path = checkpoint_dir(path, TOKENIZER)
    config = path / "tokenizer_config.json"
    if config.exists():
        for token_id, added in json.loads(config.read_text()).get("added_tokens_decoder", {}).items():
            if added.get("content") == token:
                return int(token_id)
    for added in json.loads((path / "tokenizer.json").read_text()).get("added_tokens", []):
        if added.get("content") == token:
            return int(added["id"])
    raise KeyError(f"{token} is not an added token of the tokenizer in {path}")
