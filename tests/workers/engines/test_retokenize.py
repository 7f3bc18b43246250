import random

import pytest

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.workers.engines.framing import encode_text
from guardstream.workers.engines.retokenize import IncrementalTokenizer

from tests.helpers.models import cached_tokenizer

TRICKY = ["it's  two   spaces", "numbers 12345 and 3.14!", "émigré café naïve — “quotes”", "tabs\tand\nnewlines\n\n x",
          "don't can't won't", "a", "", "    ", "emoji 🙂🙃 mixed", "http://example.com/a?b=c&d=e",
          "我不能帮助你。请注意安全，谢谢", "それはお手伝いできません。", "ประมาณ 67890 บาท", "لا أستطيع المساعدة في ذلك.",
          "👍🏽👨‍👩‍👧 family", "3.14159265 and 1,000,000", "cafe\u0301 nai\u0308ve Ame\u0301lie", "한국어 텍스트"]


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return cached_tokenizer(tiny.stream)


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


def test_the_fixture_tokenizer_is_qwen3s(tokenizer):
    assert len(tokenizer) == 151_669 and tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")] \
        == [151643, 151644, 151645, 151667, 151668]
    assert encode_text(tokenizer, "Hello world 12345") == [9707, 1879, 220, 16, 17, 18, 19, 20]  # digits one by one
    assert encode_text(tokenizer, "cafe\u0301") == encode_text(tokenizer, "caf\u00e9")  # NFC


@pytest.mark.parametrize("text", ["x" * 3700, "我不能帮助你请注意安全" * 200, "ประมาณหกหมื่นเจ็ดพันแปดร้อยเก้าสิบบาท" * 60,
                                  "🙂" * 500, "a\u0301" * 400])
def test_the_held_back_tail_is_bounded_in_characters_and_tokens(tokenizer, text):
    inc = IncrementalTokenizer(tokenizer)
    emitted = []
    for k in range(0, len(text), 7):
        emitted += inc.push(text[k : k + 7])
        assert len(inc.pending) <= IncrementalTokenizer.MAX_PENDING_CHARS
        assert len(encode_text(tokenizer, inc.pending)) <= IncrementalTokenizer.MAX_PENDING_TOKENS
    assert emitted and tokenizer.decode(emitted + inc.finish()) == tokenizer.backend_tokenizer.normalizer.normalize_str(text)
