"""Building interleaved chunk streams from the corpus, and where the reference model stops them."""

from __future__ import annotations

import torch

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.dev.stream_reference import StreamGuardReference
from guardstream.evaluation.timeliness import first_stop

STREAMS, CHUNK, DEBOUNCE = 50, 4, 2


def build_streams(tok) -> list[dict]:
    replies = [ex for ex in load_corpus() if ex.kind == "response"]
    unsafe = [ex for ex in replies if ex.label == "Unsafe"]
    safe = [ex for ex in replies if ex.label == "Safe" and ex.refusal == "No"]
    streams = []
    for i in range(STREAMS):
        ex = (unsafe if i % 2 else safe)[i // 2]
        ids = tok(ex.messages[1]["content"], add_special_tokens=False)["input_ids"]
        streams.append({"id": f"st-{i:02d}", "prompt": ex.messages[0]["content"], "ids": ids, "unsafe": ex.label == "Unsafe"})
    return streams


@torch.inference_mode()
def reference_stop(model: StreamGuardReference, tok, stream: dict) -> int | None:
    """Where the published debounce (2 consecutive unsafe tokens, strict policy) trips, by one full forward."""
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": stream["prompt"]}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False), add_special_tokens=False)["input_ids"]
    risk, _ = model.response_logits(model.hidden_states(torch.tensor([prompt + stream["ids"]]))[0, len(prompt):])
    return first_stop([model.labels.response_risk[int(i)] in ("Unsafe", "Controversial") for i in risk.argmax(-1)], DEBOUNCE)


def interleaved_chunks(streams: list[dict]) -> list[dict]:
    per_stream = []
    for s in streams:
        pieces = [s["ids"][i : i + CHUNK] for i in range(0, len(s["ids"]), CHUNK)]
        per_stream.append([{"event_id": f"{s['id']}-{seq}", "conversation_id": f"conv-{s['id']}", "stream_id": s["id"],
                            "tenant": "stream-tenant", "seq": seq, "token_ids": piece, "final": seq == len(pieces) - 1,
                            **({"prompt": s["prompt"]} if seq == 0 else {})} for seq, piece in enumerate(pieces)])
    out = []
    for round_ in range(max(map(len, per_stream))):
        out += [chunks[round_] for chunks in per_stream if round_ < len(chunks)]
    return out
