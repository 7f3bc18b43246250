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


def perturbed_copy(checkpoint: Path, into: Path, scale: float = 1.0, seed: int = 0) -> Path:
    """A copy of a checkpoint with Gaussian noise (`scale` times each matrix's own spread) added to
    its matrices: another model of the same shape, judging a few items differently (a candidate
    to compare)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, into)
    weights = load_file(into / "model.safetensors")
    noise = torch.Generator().manual_seed(seed)
    save_file({name: (w + scale * w.float().std() * torch.randn(w.shape, generator=noise)).to(w.dtype)
               if w.dim() == 2 else w for name, w in weights.items()}, into / "model.safetensors", metadata={"format": "pt"})
    return into
