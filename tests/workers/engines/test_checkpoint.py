"""Reading a checkpoint's files: the special tokens' ids come from its tokenizer files without
loading the BPE vocabulary, and must equal what the tokenizer itself says."""

import pytest

from guardstream.workers.engines.checkpoint_files import special_token_id

from tests.helpers.models import cached_tokenizer


@pytest.mark.parametrize("token", ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<think>", "</think>"])
def test_special_token_ids_equal_the_tokenizers(tiny, token):
    for checkpoint in (tiny.gen, tiny.stream):
        assert special_token_id(checkpoint, token) == cached_tokenizer(checkpoint).convert_tokens_to_ids(token)


def test_a_checkpoint_with_only_tokenizer_json_and_an_unknown_token(tmp_path, tiny):
    (tmp_path / "tokenizer.json").write_text((tiny.stream / "tokenizer.json").read_text())
    assert special_token_id(tmp_path, "<|im_end|>") == 151645
    with pytest.raises(KeyError, match="not an added token"):
        special_token_id(tmp_path, "<|not-a-token|>")
