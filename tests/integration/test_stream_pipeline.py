"""50 concurrent streams as interleaved chunks → a verdict for every chunk, one stop per unsafe stream
at the token the reference model predicts, none for safe ones, and no loss when the actor is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import torch
from transformers import AutoTokenizer

from guardstream.workers.stream_reference import StreamGuardReference
from guardstream.workers.tiny_checkpoints import load_corpus

from .conftest import wait_drained
from .kafka_helpers import produce, read_all
from .test_actor_restart import actor_pids

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
                                         add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    risk, _ = model.response_logits(model.hidden_states(torch.tensor([prompt + stream["ids"]]))[0, len(prompt):])
    unsafe = [model.labels.response_risk[int(i)] in ("Unsafe", "Controversial") for i in risk.argmax(-1)]
    run = 0
    for index, flag in enumerate(unsafe):
        run = run + 1 if flag else 0
        if run >= DEBOUNCE:
            return index
    return None


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


def test_concurrent_streams_stop_once_where_the_reference_says(worker, tiny):
    tok = AutoTokenizer.from_pretrained(str(tiny.stream))
    model = StreamGuardReference.from_pretrained(tiny.stream)
    streams = build_streams(tok)
    expected = {s["id"]: reference_stop(model, tok, s) for s in streams}
    assert sum(v is not None for v in expected.values()) >= 20 and sum(v is None for v in expected.values()) >= 20
    events = interleaved_chunks(streams)
    half = len(events) // 2
    produce(worker.settings, worker.bootstrap, events[:half], role="chunks")
    time.sleep(1.0)
    stream_pids = [pid for pid in actor_pids(worker.log(), "StreamGuard")]
    os.kill(stream_pids[-1], signal.SIGKILL)  # the actor holding every session dies mid-run
    produce(worker.settings, worker.bootstrap, events[half:], role="chunks")
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "chunks", timeout_s=240))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts", timeout_s=120))

    ours = lambda v: (v.get("stream") or {}).get("stream_id", "").startswith("st-")  # noqa: E731
    verdicts = read_all(worker.settings, worker.bootstrap, "verdicts", ours)
    chunk_verdicts = [v for v in verdicts if not v["stream"]["final"] and v["moderate"] == "response"]
    assert Counter(v["source_event_id"] for v in chunk_verdicts) == Counter(e["event_id"] for e in events)
    assert not [v for v in verdicts if v["error"]]
    finals = {v["stream"]["stream_id"]: v for v in verdicts if v["stream"]["final"]}
    assert set(finals) == {s["id"] for s in streams}
    stops = Counter(v["stream"]["stream_id"] for v in chunk_verdicts if v["action"] == "stop")
    for s in streams:
        want = expected[s["id"]]
        assert stops[s["id"]] == (1 if want is not None else 0), s["id"]
        assert finals[s["id"]]["stream"]["stop_token"] == want, s["id"]
    actions = read_all(worker.settings, worker.bootstrap, "actions",
                       lambda a: a["action"] == "stop" and a["conversation_id"].startswith("conv-st-"))
    assert Counter(a["conversation_id"] for a in actions) == Counter(f"conv-{sid}" for sid in stops)
