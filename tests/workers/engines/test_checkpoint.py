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


def test_for_a_hub_id_the_workers_readers_fetch_small_files_and_only_the_engines_the_weights(tiny, monkeypatch):
    """The worker's process reads config.json and the tokenizer; the weights are its actors' to fetch."""
    import fnmatch

    import huggingface_hub

    from guardstream.workers.engines.chat_tokenizer import ChatTokenizer
    from guardstream.workers.engines.checkpoint_files import checkpoint_config
    from guardstream.workers.engines.qwen3 import load_checkpoint

    asked = []

    def snapshot_download(repo_id, allow_patterns):  # the hub, which this machine cannot reach
        asked.append((repo_id, allow_patterns))
        return str(tiny.stream)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    hub_id = "Qwen/Qwen3Guard-Stream-0.6B"
    assert checkpoint_config(hub_id)["max_position_embeddings"] > 0
    assert len(ChatTokenizer.from_pretrained(hub_id)) > 0 and special_token_id(hub_id, "<|im_end|>") == 151645
    fetches_weights = [any(fnmatch.fnmatch("model.safetensors", p) for p in patterns) for _, patterns in asked]
    assert len(asked) == 3 and {repo for repo, _ in asked} == {hub_id} and not any(fetches_weights)
    load_checkpoint(hub_id)
    assert any(fnmatch.fnmatch("model.safetensors", p) for p in asked[-1][1])
