"""The cached, batched Stream engine gives the verdicts of one plain Hugging Face forward over the
whole sequence (Qwen3Model + heads, same weights, fp32): same argmax everywhere, |Δprob| ≤ 1e-4."""

from __future__ import annotations

import random

import pytest
import torch

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.workers.engines.messages import StreamCall, TokenVerdict
from guardstream.workers.engines.stream_engine import StreamEngine
from guardstream.dev.stream_reference import StreamGuardReference

from tests.helpers.models import cached_tokenizer

TOL = 1e-4


@pytest.fixture(scope="module")
def setup(tiny):
    tok = cached_tokenizer(tiny.stream)
    return tok, StreamGuardReference.from_pretrained(tiny.stream), lambda: StreamEngine.from_pretrained(tiny.stream)


def conversations(tok, n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids) pairs of varied lengths from the corpus, replies padded out with more text."""
    rng = random.Random(seed)
    corpus = [ex for ex in load_corpus() if ex.kind == "response"]
    pairs = []
    for i in range(n):
        ex = corpus[rng.randrange(len(corpus))]
        prompt = tok.apply_chat_template(ex.messages[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False)
        reply = " ".join([ex.messages[1]["content"]] * rng.randint(1, 4))
        pairs.append((tok(prompt, add_special_tokens=False)["input_ids"],
                      tok(reply, add_special_tokens=False)["input_ids"][: rng.randint(3, 120)]))
    return pairs


@torch.inference_mode()
def reference(model: StreamGuardReference, im_end: int, prompt: list[int], reply: list[int]):
    h = model.hidden_states(torch.tensor([prompt + reply]))[0]
    q_risk, q_cat = model.query_logits(h[prompt.index(im_end)])
    r_risk, r_cat = model.response_logits(h[len(prompt):])
    return torch.softmax(q_risk, -1), torch.softmax(q_cat, -1), torch.softmax(r_risk, -1), torch.softmax(r_cat, -1)


def assert_same(verdict: TokenVerdict, risk: torch.Tensor, category: torch.Tensor, names: list[str], cat_names: list[str]):
    assert verdict.label == names[int(risk.argmax())]
    assert verdict.category == cat_names[int(category.argmax())]
    assert max(abs(verdict.probabilities[n] - float(p)) for n, p in zip(names, risk)) <= TOL
    assert abs(verdict.category_probability - float(category.max())) <= TOL


def check(setup, prompt, reply, query: TokenVerdict, tokens: list[TokenVerdict]):
    tok, model, _ = setup
    labels = model.labels
    q_risk, q_cat, r_risk, r_cat = reference(model, tok.convert_tokens_to_ids("<|im_end|>"), prompt, reply)
    assert_same(query, q_risk, q_cat, labels.query_risk, labels.query_category)
    assert len(tokens) == len(reply)
    for verdict, risk, cat in zip(tokens, r_risk, r_cat):
        assert_same(verdict, risk, cat, labels.response_risk, labels.response_category)


@pytest.mark.parametrize("chunk", [1, 16, None])
def test_chunk_size_does_not_change_verdicts(setup, chunk):
    tok, _, make = setup
    for i, (prompt, reply) in enumerate(conversations(tok, 4, seed=chunk or 99)):
        engine = make()
        query = engine.open(f"s{i}", prompt)
        size = chunk or len(reply)
        tokens = [v for start in range(0, len(reply), size) for v in engine.feed(f"s{i}", reply[start : start + size])]
        check(setup, prompt, reply, query, tokens)


def test_a_session_batched_with_31_others_gets_its_solo_verdicts(setup):
    tok, _, make = setup
    pairs = conversations(tok, 32, seed=5)
    engine = make()
    opened = engine.step([StreamCall(f"s{i}", [], prompt_ids=p) for i, (p, _) in enumerate(pairs)])
    tokens: dict[int, list[TokenVerdict]] = {i: [] for i in range(32)}
    rng = random.Random(3)
    cursor = [0] * 32
    while any(cursor[i] < len(r) for i, (_, r) in enumerate(pairs)):
        batch = []
        for i, (_, reply) in enumerate(pairs):
            if cursor[i] < len(reply):
                n = rng.randint(1, 16)  # every session with its own chunk size, every step
                batch.append((i, reply[cursor[i] : cursor[i] + n]))
                cursor[i] += n
        for (i, ids), result in zip(batch, engine.step([StreamCall(f"s{i}", ids) for i, ids in batch])):
            tokens[i].extend(result.tokens)
    for i, (prompt, reply) in enumerate(pairs):
        check(setup, prompt, reply, opened[i].query, tokens[i])
    assert engine.pool.k.shape[1] >= 32  # the pool grew its slots on the way


def test_appending_tokens_never_changes_earlier_verdicts(setup):
    tok, _, make = setup
    (prompt, reply), = conversations(tok, 1, seed=11)
    engine = make()
    engine.open("s", prompt)
    first = engine.feed("s", reply[:10])
    engine.feed("s", reply[10:])
    _, model, _ = setup
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    _, _, short_risk, _ = reference(model, im_end, prompt, reply[:10])
    _, _, long_risk, _ = reference(model, im_end, prompt, reply)
    assert torch.allclose(short_risk, long_risk[:10], atol=TOL)
    for verdict, risk in zip(first, long_risk[:10]):
        assert verdict.label == model.labels.response_risk[int(risk.argmax())]


def test_sessions_limits_eviction_and_memory(setup):
    tok, _, make = setup
    (prompt, reply), = conversations(tok, 1, seed=2)
    engine = make()
    engine.max_sessions, engine.idle_ttl_s = 2, 60
    engine.open("a", prompt)
    engine.open("b", prompt)
    from guardstream.workers.engines.stream_engine import SessionLimit, UnknownSession

    with pytest.raises(SessionLimit):
        engine.open("c", prompt)
    engine.sessions["a"].last_used -= 120  # idle past the TTL: the next open evicts it
    engine.open("c", prompt)
    assert set(engine.sessions) == {"b", "c"}
    with pytest.raises(UnknownSession):
        engine.feed("a", reply[:2])
    memory = engine.memory()
    blocks = -(-len(prompt) // engine.pool.block_size)
    assert memory["used_bytes"] == 2 * blocks * engine.pool.block_bytes() > 0 and memory["sessions"] == 2
    engine.close("b")
    assert engine.memory()["used_bytes"] == blocks * engine.pool.block_bytes()


def test_kv_memory_follows_the_tokens_held_and_the_budget_evicts_the_least_recently_used(setup):
    tok, _, make = setup
    (prompt, reply), = conversations(tok, 1, seed=3)
    unbounded = make()
    engine = make()
    per_block = engine.pool.block_bytes()
    blocks = lambda n: -(-n // engine.pool.block_size)  # noqa: E731
    for name in ("a", "b"):
        engine.open(name, prompt)
    long = (reply * 40)[: engine.max_positions - len(prompt)]
    engine.open("long", prompt)
    engine.feed("long", long)
    # one long session holds its own blocks; the short ones are not grown to its length
    assert engine.memory()["used_bytes"] == (2 * blocks(len(prompt)) + blocks(len(prompt) + len(long))) * per_block
    # a budget for the long session and one short one: a new session evicts the least recently used
    engine = make()
    budget = lambda n: type(engine.pool)(engine.shape, engine.pool.dtype, "cpu", max_bytes=n * per_block)  # noqa: E731
    engine.pool = budget(blocks(len(prompt)) + blocks(len(prompt) + len(long)))
    engine.open("a", prompt)
    engine.open("long", prompt)
    engine.open("b", prompt)
    got = engine.feed("long", long)
    assert set(engine.sessions) == {"long", "b"} and engine.evicted == 1  # "a" was used least recently
    unbounded.open("long", prompt)
    want = unbounded.feed("long", long)
    assert [(t.label, t.category) for t in got] == [(t.label, t.category) for t in want]
    assert engine.memory()["used_bytes"] <= engine.memory()["budget_bytes"]
    from guardstream.workers.engines.qwen3 import KVFull

    engine = make()
    engine.pool = budget(blocks(len(prompt)) + 1)
    engine.open("a", prompt)
    with pytest.raises(KVFull):  # a session alone past the budget fails (the actor answers it an error)
        engine.feed("a", long)


def test_a_first_chunk_opens_its_session_and_is_judged_in_one_forward(setup):
    """An opening call sends its prompt and its reply tokens through the same forward, with the
    verdicts of an open and then a feed."""
    tok, _, make = setup
    (prompt, reply), = conversations(tok, 1, seed=7)
    separate = make()
    want_query, want_tokens = separate.open("s", prompt), separate.feed("s", reply[:12])
    engine, forwards = make(), []
    forward = engine.backbone.forward
    engine.backbone.forward = lambda *args: forwards.append(args) or forward(*args)
    answer, = engine.run([StreamCall("s", reply[:12], prompt_ids=prompt)])
    assert len(forwards) == 1
    assert (answer.query.label, answer.query.category) == (want_query.label, want_query.category)
    for got, want in zip(answer.tokens, want_tokens, strict=True):
        assert (got.label, got.category) == (want.label, want.category)
        assert all(abs(got.probabilities[k] - want.probabilities[k]) <= TOL for k in want.probabilities)
    assert engine.in_step(StreamCall("s", [], judged=12))
    # an opening beside a feeding session: the feed's few tokens are not padded to the prompt's width
    forwards.clear()
    engine.run([StreamCall("s", reply[12:14], judged=12), StreamCall("t", reply[:3], prompt_ids=prompt)])
    assert sorted(tokens.shape[1] for tokens, *_ in forwards) == [2, len(prompt) + 3]


def test_a_device_error_rolls_the_batch_back_and_says_the_device_is_lost(setup):
    """A CUDA error is sticky on the device: the engine does not narrow it down to one session, it
    restores the sessions it fed and raises DeviceLost (the actor exits and Ray restarts it)."""
    from guardstream.workers.engines.stream_engine import DeviceLost

    tok, _, make = setup
    (prompt, reply), = conversations(tok, 1, seed=8)
    engine = make()
    engine.run([StreamCall("s", reply[:4], prompt_ids=prompt)])
    length = engine.sessions["s"].length

    def broken(*_):
        raise RuntimeError("CUDA error: device-side assert triggered")

    engine.backbone.forward = broken
    with pytest.raises(DeviceLost):
        engine.run([StreamCall("s", reply[4:8], judged=4)])
    assert engine.sessions["s"].length == length
