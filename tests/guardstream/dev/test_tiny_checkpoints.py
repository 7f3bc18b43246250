"""The fixture checkpoints are in the exact Qwen3Guard formats and mean something on their corpus."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints, load_corpus
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest
from guardstream.dev.stream_reference import StreamGuardReference

from tests.helpers.models import cached_tokenizer

HEADS = ["risk_level_category_pre", "risk_level_category_layernorm", "risk_level_head", "category_head",
         "query_risk_level_category_pre", "query_risk_level_category_layernorm", "query_risk_level_head", "query_category_head"]


def test_gen_checkpoint_format(tiny):
    config = json.loads((tiny.gen / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    assert config["head_dim"] == 64 and "NOT a safety model" in config["guardstream_fixture"]
    engine, tok = GenEngine(str(tiny.gen)), cached_tokenizer(tiny.gen)  # the checkpoint as transformers reads it
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(token)) == token
    render = lambda messages, kind: tok.decode(engine.input_ids(GenRequest(messages, kind)))  # noqa: E731
    prompt = render([{"role": "user", "content": "hi"}], Moderate.prompt)
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "<BEGIN SAFETY POLICY>" in prompt and "Jailbreak." in prompt and "Refusal" not in prompt
    reply = render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], Moderate.response)
    assert "ASSISTANT: yo" in reply and "'Refusal: Yes' or 'Refusal: No'" in reply and "Jailbreak." not in reply


def test_stream_checkpoint_format(tiny):
    config = json.loads((tiny.stream / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForGuardModel"]
    for prefix, size in (("response_risk_level", "num_risk_level"), ("response_category", "num_category"),
                         ("query_risk_level", "num_query_risk_level"), ("query_category", "num_query_category")):
        assert sorted(map(int, config[f"{prefix}_map"])) == list(range(config[size]))
    names = set(load_file(str(tiny.stream / "model.safetensors")))
    assert {n.split(".")[0] for n in names} == {"model", *HEADS}
    assert all(f"{h}.weight" in names for h in HEADS) and not any(n.endswith(".bias") for n in names)
    assert "Jailbreak" in config["query_category_map"].values() and "Jailbreak" not in config["response_category_map"].values()


def test_gen_fixture_agrees_with_heldout_labels(tiny):
    heldout = load_corpus("heldout")
    results = GenEngine(str(tiny.gen)).classify([GenRequest(x.messages, Moderate(x.kind)) for x in heldout])
    agree = sum(r.judgement is not None and r.judgement.risk_level.value == x.label for x, r in zip(heldout, results))
    assert agree / len(heldout) >= 0.9, f"{agree}/{len(heldout)}"


@torch.inference_mode()
def test_stream_fixture_agrees_with_heldout_labels(tiny):
    
    model = StreamGuardReference.from_pretrained(tiny.stream)
    tok = cached_tokenizer(tiny.stream)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    query_hits = query_total = flagged_right = flagged_total = 0
    for ex in load_corpus("heldout"):
        prefix_text = tok.apply_chat_template(ex.messages[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False)
        prefix = tok(prefix_text, add_special_tokens=False)["input_ids"]
        reply = tok(ex.messages[1]["content"], add_special_tokens=False)["input_ids"] if ex.kind == "response" else []
        h = model.hidden_states(torch.tensor([prefix + reply]))[0]
        if ex.kind == "prompt":
            risk, _ = model.query_logits(h[prefix.index(im_end)])
            query_hits += model.labels.query_risk[int(risk.argmax())] == ex.label
            query_total += 1
        else:
            risk, _ = model.response_logits(h[len(prefix):])
            unsafe = [model.labels.response_risk[int(i)] == "Unsafe" for i in risk.argmax(-1)]
            flagged_right += any(unsafe) == (ex.label == "Unsafe")
            flagged_total += 1
    assert query_hits / query_total >= 0.85, f"query {query_hits}/{query_total}"
    assert flagged_right / flagged_total >= 0.9, f"response {flagged_right}/{flagged_total}"


def test_builds_are_deterministic(tmp_path, monkeypatch):
    weights = []
    for run in ("a", "b"):
        monkeypatch.setenv("GUARDSTREAM_HOME", str(tmp_path / run))
        built = build_tiny_checkpoints(gen_steps=2, stream_steps=2)
        weights.append([(built.gen / "model.safetensors").read_bytes(), (built.stream / "model.safetensors").read_bytes()])
    assert weights[0] == weights[1]


def test_a_worker_given_no_models_finds_the_cached_fixtures_without_torch_or_transformers(tiny):
    """Each test worker and the demo start this way: importing torch and transformers only to find the
    cache cost ten seconds of CPU a start."""
    code = ("import sys\nfrom guardstream.cli.run import worker_settings\ns = worker_settings(None)\n"
            "print(s.gen.model, s.stream.model, sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(tiny.gen), str(tiny.stream), "[]"]
