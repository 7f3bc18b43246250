"""Fast Gen paths against the model card's way (`generate()` + parse) on the same weights: the same
label for every input, and probabilities within 1e-3 between the transformers scoring paths. The
scoring paths decode the answer's tail from the grammar's drafts (speculative, the default) except
"one token a step", greedy decoding as it was before drafts.

Batch size 1 runs on every third input: it decodes each answer alone (seven times the batched
path's time), and what it checks, that batch-mates and padding change nothing, needs no more."""

import pytest

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest

from tests.helpers.models import cached_tokenizer


@pytest.fixture(scope="module")
def paths(tiny):
    corpus = load_corpus()
    requests = [GenRequest(x.messages, Moderate(x.kind)) for x in corpus]
    engines = {
        "generate": (GenEngine(str(tiny.gen), mode="generate"), ALL),
        "score+prefix, batched": (GenEngine(str(tiny.gen)), ALL),
        "score+prefix, one token a step": (GenEngine(str(tiny.gen), speculative=False), ALL),
        "score, no prefix reuse": (GenEngine(str(tiny.gen), reuse_prefix=False), ALL),
        "score+prefix, one at a time": (GenEngine(str(tiny.gen), max_batch_size=1), EVERY_THIRD),
    }
    results = {name: (rows, engine.classify(requests[rows])) for name, (engine, rows) in engines.items()}
    forwards = {name: engine.scorer.decode_forwards for name, (engine, _) in engines.items() if engine.mode == "score"}
    return requests, results, forwards


ALL, EVERY_THIRD = slice(None), slice(None, None, 3)


def judged(result):
    return (result.judgement.risk_level, result.judgement.categories, result.judgement.refusal) if result.judgement else None


def test_every_fast_path_gives_the_reference_answer_on_every_input(paths):
    requests, results, _ = paths
    assert len(requests) >= 400
    _, reference = results["generate"]
    assert sum(judged(r) is not None for r in reference) >= len(requests) - 2  # the fixture answers in format
    for name, (rows, answers) in results.items():
        assert len(answers) == len(requests[rows]) and len(answers) >= 140, name
        assert [judged(r) for r in answers] == [judged(r) for r in reference[rows]], name
        assert [r.raw_output for r in answers] == [r.raw_output for r in reference[rows]], name


def test_drafts_decode_the_corpus_in_a_third_of_the_forwards_or_fewer(paths):
    _, _, forwards = paths
    drafted, stepped = forwards["score+prefix, batched"], forwards["score+prefix, one token a step"]
    assert drafted * 3 <= stepped, forwards


def test_scoring_paths_agree_on_probabilities(paths):
    _, results, _ = paths
    _, base = results["score+prefix, batched"]
    for name in ("score, no prefix reuse", "score+prefix, one at a time", "score+prefix, one token a step"):
        rows, answers = results[name]
        worst = max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in zip(base[rows], answers, strict=True) for k in a.probabilities)
        assert worst <= 1e-3, (name, worst)
    for r in base:
        assert abs(sum(r.probabilities.values()) - 1) < 1e-5
        if r.judgement:
            assert max(r.probabilities, key=r.probabilities.get) == r.judgement.risk_level.value


def test_the_shared_prefix_is_the_policy_text(tiny):
    engine = GenEngine(str(tiny.gen))
    for kind, conversation in ((Moderate.prompt, [{"role": "user", "content": "hi"}]),
                               (Moderate.response, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])):
        ids = engine._prefix(kind)
        text = cached_tokenizer(tiny.gen).decode(ids)
        assert "<END SAFETY POLICY>" in text and "<BEGIN CONVERSATION>" in text and "hi" not in text.split("<BEGIN CONVERSATION>")[1]
        assert engine.input_ids(GenRequest(conversation, kind))[: len(ids)] == ids


def test_every_corpus_request_starts_with_the_shared_prefix(tiny):
    engine = GenEngine(str(tiny.gen))
    for example in load_corpus():
        kind = Moderate(example.kind)
        assert engine.input_ids(GenRequest(example.messages, kind))[: len(engine._prefix(kind))] == engine._prefix(kind)


def test_label_probabilities_equal_a_plain_hugging_face_forward(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    engine = GenEngine(str(tiny.gen), max_batch_size=16)
    model = AutoModelForCausalLM.from_pretrained(str(tiny.gen), dtype=torch.float32).eval()
    requests = [GenRequest(x.messages, Moderate(x.kind)) for x in load_corpus()[:48]]
    ours = engine.classify(requests)
    worst = 0.0
    with torch.inference_mode():
        for request, result in zip(requests, ours):
            ids = engine.input_ids(request) + engine.forced_ids
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            reference = torch.softmax(logits[engine.label_ids], -1).tolist()
            worst = max(worst, *(abs(a - b) for a, b in zip(reference, result.probabilities.values())))
    assert worst <= 1e-4, worst


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_a_conversation_past_the_models_positions_is_too_long_and_its_batch_mates_are_judged(tiny, mode):
    engine = GenEngine(str(tiny.gen), mode=mode)
    long = GenRequest([{"role": "user", "content": "word " * engine.max_positions}], Moderate.prompt)
    short = GenRequest([{"role": "user", "content": "hello there"}], Moderate.prompt)
    results = engine.classify([short, long, short])
    assert results[1].too_long and results[1].judgement is None and "too_long" in results[1].error
    assert not results[0].too_long and results[0].raw_output == results[2].raw_output == engine.classify([short])[0].raw_output


def test_a_kv_budget_splits_batches_keeps_the_answers_and_is_never_exceeded(tiny, paths):
    requests, results, _ = paths
    requests, expected = requests[:64], results["score+prefix, batched"][1][:64]
    unbounded = GenEngine(str(tiny.gen))
    token_bytes = unbounded.scorer.token_bytes
    mb = max(1, (3 * 512 * token_bytes) >> 20)  # three slots of the smallest size, or more for a larger model
    engine = GenEngine(str(tiny.gen), kv_cache_mb=mb)
    assert engine.scorer.rows_within(512) < engine.max_batch_size  # the corpus batches must be split
    pool, held = engine.scorer.pool, []
    fit = engine.scorer._fit

    def watched(rows: int, span: int) -> None:
        fit(rows, span)
        held.append(pool.k.numel() * pool.k.element_size() + pool.v.numel() * pool.v.element_size())
        assert len(pool.free) == pool.k.shape[1]  # reshaped only while no slot is held

    engine.scorer._fit = watched
    bounded = engine.classify(requests)
    assert held and max(held) <= mb << 20
    for a, b in zip(expected, bounded):
        assert judged(a) == judged(b)
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) <= 1e-3
    # one conversation longer than the budget holds is too_long; its batch-mates are judged as before
    limit = engine.scorer.max_span()
    long = GenRequest([{"role": "user", "content": "word " * limit}], Moderate.prompt)
    answers = engine.classify([requests[0], long, requests[1]])
    assert answers[1].too_long and "gen_kv_cache_mb" in answers[1].error
    assert [judged(a) for a in (answers[0], answers[2])] == [judged(b) for b in expected[:2]]
    assert max(held) <= mb << 20
