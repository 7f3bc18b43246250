"""Timeliness on the fixture corpus's reply streams: `guardstream eval` puts each marked unsafe reply
where the published debounce on the reference model's full forward puts it."""

import json

import torch
from click.testing import CliRunner

from guardstream.cli import main
from guardstream.dev.stream_reference import StreamGuardReference
from guardstream.dev.tiny_checkpoints import FIXTURES, load_corpus
from guardstream.evaluation.timeliness import first_stop

from tests.helpers.models import cached_tokenizer


def test_first_stop_needs_the_debounce_s_run_of_unsafe_tokens():
    assert first_stop([True, False, True, True, True], 2) == 3 and first_stop([True, False] * 3, 2) is None


@torch.inference_mode()
def test_each_marked_reply_stops_where_the_reference_debounce_does(tiny):
    tok, reference = cached_tokenizer(tiny.stream), StreamGuardReference.from_pretrained(tiny.stream)
    offsets = []
    for ex in (x for x in load_corpus("heldout") if x.kind == "response" and x.label == "Unsafe" and x.unsafe_from is not None):
        prompt = tok(tok.apply_chat_template([ex.messages[0]], tokenize=False, add_generation_prompt=True,
                                             enable_thinking=False), add_special_tokens=False)["input_ids"]
        reply = tok(ex.messages[1]["content"], add_special_tokens=False, return_offsets_mapping=True)
        risk, _ = reference.response_logits(reference.hidden_states(torch.tensor([prompt + reply["input_ids"]]))[0, len(prompt):])
        stop = first_stop([reference.labels.response_risk[int(i)] in ("Unsafe", "Controversial") for i in risk.argmax(-1)], 2)
        unsafe_at = next(i for i, (_, end) in enumerate(reply["offset_mapping"]) if end > ex.unsafe_from)
        if stop is not None:
            offsets.append(stop - unsafe_at)
    assert offsets, "the fixture stream model stops some marked reply"

    out = CliRunner().invoke(main, ["eval", str(FIXTURES / "corpus.jsonl"), "--split", "heldout", "--json",
                                    "--gen-model", str(tiny.gen), "--stream-model", str(tiny.stream)])
    assert out.exit_code == 0, out.output
    timeliness = json.loads(out.stdout)["timeliness"]
    assert timeliness["offsets"] == offsets
    assert timeliness["buckets"]["exact"] == offsets.count(0)
    assert timeliness["buckets"]["within 16"] == sum(0 <= o <= 16 for o in offsets)
    assert timeliness["buckets"]["missed"] == timeliness["streams"] - len(offsets)
