import random

import pytest
from transformers import AutoTokenizer

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.workers.engines.retokenize import IncrementalTokenizer

TRICKY = ["it's  two   spaces", "numbers 12345 and 3.14!", "émigré café naïve — “quotes”", "tabs\tand\nnewlines\n\n x",
          "don't can't won't", "a", "", "    ", "emoji 🙂🙃 mixed", "http://example.com/a?b=c&d=e"]


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(str(tiny.stream))


def split_randomly(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text), rng.randint(0, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def test_ids_pushed_out_equal_tokenizing_the_whole_text(tokenizer):
    rng = random.Random(0)
    texts = TRICKY + [ex.messages[-1]["content"] for ex in load_corpus()[:150]]
    for text in texts:
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        for _ in range(5):
            inc = IncrementalTokenizer(tokenizer)
            ids = [i for delta in split_randomly(text, rng) for i in inc.push(delta)] + inc.finish()
            assert ids == whole, (text, ids, whole)


def test_char_by_char_holds_back_only_the_unstable_tail(tokenizer):
    inc = IncrementalTokenizer(tokenizer)
    emitted = [i for ch in "Sure thing. First, fill a steel pipe" for i in inc.push(ch)]
    assert emitted and inc.pending == " steel pipe"  # the last two pre-tokens wait for more text
    assert emitted + inc.finish() == tokenizer("Sure thing. First, fill a steel pipe", add_special_tokens=False)["input_ids"]
