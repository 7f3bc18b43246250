"""The Gen benchmark's plumbing (its numbers are reported by `guardstream bench gen`, never asserted)."""

import pytest

from guardstream.bench.gen import PATHS, run_gen_bench


def test_every_path_and_batch_is_measured_against_the_reference(tiny):
    seen = []
    results = run_gen_bench(str(tiny.gen), [1, 4], count=8, device="cpu", dtype="auto", report=seen.append)
    assert seen == results and results[0].label.startswith("reference") and results[0].batch == 1
    assert [(m.label, m.batch) for m in results[1:]] == [(p, b) for p in PATHS for b in (1, 4)]
    assert all(m.count == 8 and len(m.latencies_ms) == 8 and m.agree == 1.0 for m in results)
    forwards = {(m.label, m.batch): m.forwards for m in results}
    assert forwards[("label scoring + prefix reuse + answer drafts", 4)] < forwards[("label scoring + prefix reuse", 4)]


def test_random_shape_bench_measures_each_path_against_generate():
    import torch

    from guardstream.bench.gen import Workload, random_gen_model, run_gen_shape_bench

    model = random_gen_model("8b", num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                             num_key_value_heads=1, head_dim=32, vocab_size=512)
    assert not model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    seen = []
    workload = Workload(prefix_tokens=12, conversation_tokens=(3, 9), tail_tokens=4, answer_tokens=5)
    results = run_gen_shape_bench("0.6b", [1, 2], 4, "cpu", torch.float32, seen.append, workload, num_hidden_layers=1,
                                  hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                                  head_dim=32, vocab_size=512)
    drafted = "label scoring + prefix reuse + answer drafts (right)"
    assert seen == results and [(m.label, m.batch) for m in results] == [
        ("reference: generate(), one at a time", 1), ("label scoring", 1), ("label scoring", 2),
        ("label scoring + prefix reuse", 1), ("label scoring + prefix reuse", 2), (drafted, 1), (drafted, 2)]
    assert all(m.count == 4 and len(m.latencies_ms) == 4 and m.agree is None and m.useful_tflops > 0 for m in results)
    forwards = {(m.label, m.batch): m.forwards for m in results}
    assert forwards[("label scoring + prefix reuse", 1)] == 3  # the label's, then one per answer token after its first
    assert forwards[(drafted, 1)] == 2  # the label's, then the whole drafted answer checked at once


@pytest.mark.parametrize("config_name", ["0.6b", "8b"])  # tied and untied output projection
def test_the_random_shapes_answer_like_a_hugging_face_forward(config_name):
    """The scorer on a random real-layout model reads the same next tokens as Hugging Face's generate()."""
    import torch

    from guardstream.bench.gen import random_gen_model
    from guardstream.workers.engines.gen_scorer import GenScorer

    model = random_gen_model(config_name, num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                             num_key_value_heads=1, head_dim=32, vocab_size=512)
    scorer = GenScorer(model.config.to_dict(), dict(model.state_dict()), max_batch_size=4)
    prefix, rows = [5, 6, 7, 8], [[9, 10, 11], [12, 13, 14, 15, 16]]
    scored = scorer.score(prefix, rows, [1, 2, 3], set(), 6)
    with torch.inference_mode():
        for row, result in zip(rows, scored):
            out = model.generate(torch.tensor([prefix + row]), do_sample=False, max_new_tokens=6, min_new_tokens=6)
            assert result.answer_ids == out[0, len(prefix) + len(row):].tolist()
