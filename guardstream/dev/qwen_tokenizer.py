"""Qwen3's real tokenizer, built offline for the fixture checkpoints.

Qwen's byte-level BPE ranks (151,643 tokens) ship on PyPI inside Alibaba's `dashscope` SDK as
`dashscope/resources/qwen.tiktoken`; only that file is read, the SDK is never imported. Around it
go what Qwen3's published tokenizer adds: NFC, Qwen's pre-tokenizer (digits one by one, letter
runs, newline runs) and the 26 added tokens from `<|endoftext|>` (151643) to `</think>` (151668).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# In id order from 151643; the think and tool markers are added tokens but not special ones, as in Qwen3.
ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
         ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
         ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
         ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
         ("<|fim_prefix|>", True), ("<|fim_middle|>", True), ("<|fim_suffix|>", True), ("<|fim_pad|>", True),
         ("<|repo_name|>", True), ("<|file_sep|>", True), ("<tool_response>", False), ("</tool_response>", False),
         ("<think>", False), ("</think>", False)]
PADDED_VOCAB = 151_936  # the embedding rows of Qwen3's published configs (ids past 151668 are never produced)


def qwen_bpe_file() -> Path:
    spec = importlib.util.find_spec("dashscope")
    path = Path(next(iter(spec.submodule_search_locations or []), "")) / "resources" / "qwen.tiktoken" if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError("Qwen's BPE vocabulary was not found: install the `dashscope` package, which ships it as "
                                "dashscope/resources/qwen.tiktoken (`pip install --no-deps dashscope==2.0.2`)")
    return path


def qwen3_tokenizer(model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """Imports transformers here: the fixtures' cache key reads `qwen_bpe_file` without it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab, merges = TikTokenConverter(str(qwen_bpe_file()), pattern=PATTERN).extract_vocab_merges_from_model(str(qwen_bpe_file()))
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_tokens([AddedToken(text, special=special, normalized=False) for text, special in ADDED])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=[t for t, special in ADDED if special and t not in ("<|endoftext|>", "<|im_end|>")],
        model_max_length=model_max_length,
    )
