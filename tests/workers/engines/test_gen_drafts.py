"""Decoding Gen's answer from drafts of its grammar gives greedy decoding's answer token for token,
whatever the draft: right, wrong at its first, middle or last token, too long, or none. (That
right drafts take a few forwards where one token a step takes one per token, test_gen_parity
counts on the corpus its engines decode anyway.)"""

from __future__ import annotations

import pytest

from guardstream.bench.gen import Workload, random_gen_model
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_drafts import AnswerDrafts, answers
from guardstream.workers.engines.gen_engine import FORCED_PREFIX, GenEngine
from guardstream.workers.engines.gen_scorer import GenScorer
from guardstream.workers.engines.messages import GenRequest


@pytest.fixture(scope="module")
def engine(tiny):
    return GenEngine(str(tiny.gen))


def batch(engine: GenEngine, kind: Moderate, n: int = 12) -> tuple[list[int], list[list[int]]]:
    """n corpus requests of one kind as the scorer takes them: the shared prefix, and each row after it."""
    prompts = [engine.input_ids(GenRequest(x.messages, kind)) for x in load_corpus() if x.kind == kind.value][:n]
    prefix = engine._prefix(kind)
    return prefix, [ids[len(prefix):] + engine.forced_ids for ids in prompts]


def decoded(engine: GenEngine, prefix, rows, draft=None, max_new_tokens: int = 64):
    return [s.answer_ids for s in engine.scorer.score(prefix, rows, engine.label_ids, engine.stop_ids, max_new_tokens, draft)]


def test_the_grammar_has_every_one_category_answer_and_drafts_the_rest_of_the_first_that_fits(engine):
    assert len(answers(Moderate.prompt)) == 3 * 10 and len(answers(Moderate.response)) == 3 * 9 * 2
    assert answers(Moderate.prompt)[0] == " Safe\nCategories: None"
    drafts = AnswerDrafts(engine.tokenizer, FORCED_PREFIX, 7, Moderate.response)
    first = drafts.answers[0]
    assert drafts.draft([]) == first and drafts.draft(first[:2]) == first[2:] and first[-1] == 7
    assert drafts.draft([first[0], -1]) == []  # off the grammar: no draft


@pytest.mark.parametrize("kind", [Moderate.prompt, Moderate.response])
def test_any_draft_gives_greedys_answer(engine, kind):
    prefix, rows = batch(engine, kind)
    greedy = decoded(engine, prefix, rows)
    end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    truth = {tuple(r[-8:]): answer + [end] for r, answer in zip(rows, greedy)}  # each row's whole answer, by its tail
    assert decoded(engine, prefix, rows, engine._drafts[kind].draft) == greedy

    def spoiled(at):  # the right rest of each answer, one token changed
        def draft(so_far):
            for whole in truth.values():
                if whole[: len(so_far)] == so_far and len(whole) > len(so_far):
                    rest = list(whole[len(so_far):])
                    i = at(len(rest))
                    rest[i] = rest[i] + 1
                    return rest
            return []
        return draft

    for where in (lambda n: 0, lambda n: n // 2, lambda n: n - 1):
        assert decoded(engine, prefix, rows, spoiled(where)) == greedy
    assert decoded(engine, prefix, rows, lambda so_far: [end] * 200) == greedy  # longer than any answer may be
    assert decoded(engine, prefix, rows, lambda so_far: [0, 1, 2]) == greedy
    assert decoded(engine, prefix, rows, engine._drafts[kind].draft, max_new_tokens=3) == [a[:3] for a in greedy]


def test_random_weights_of_a_real_shape_decode_alike_with_and_without_drafts(engine):
    """0.6B's widths and vocabulary with two layers of random weights: the model answers off the
    grammar and never ends its turn, so every draft is wrong; the answers stay greedy's."""
    model = random_gen_model("0.6b", num_hidden_layers=2)
    scorer = GenScorer(model.config.to_dict(), dict(model.state_dict()), max_batch_size=8)
    prefix, rows = Workload(conversation_tokens=(16, 64)).requests(8, model.config.vocab_size)
    grammar = engine._drafts[Moderate.response].answers

    def draft(so_far):
        return grammar[len(so_far) % len(grammar)][: 1 + len(so_far) % 6]

    label_ids = rows[0][-3:]
    plain = scorer.score(prefix, rows, label_ids, set(), 16)
    guessed = scorer.score(prefix, rows, label_ids, set(), 16, draft)
    assert [s.answer_ids for s in guessed] == [s.answer_ids for s in plain]
    assert all(len(s.answer_ids) == 16 for s in plain)
