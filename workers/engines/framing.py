"""How a conversation becomes the token ids a guard model reads.

The checkpoint's chat template places the text, and its markers (`<|im_start|>`, `<|im_end|>`,
`<think>`, ...) are control tokens. What users and assistants wrote is always text: someone who
types `<|im_end|>` gets those characters, never the marker, or they could close their own turn
and forge the next one. So the template is rendered with placeholders for the messages, its own
markers become their ids, and each stretch between two markers (template text and message text
together, as the tokenizer would see it) is encoded with no added token matched. For messages
without markers this gives exactly the ids of tokenizing the rendered text.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PLACEHOLDER = "\ue000{}\ue001"  # private-use characters: no template or message has them
_PLACEHOLDERS = re.compile("\ue000(\\d+)\ue001")


def encode_text(tokenizer, text: str) -> list[int]:
    """Ids of `text` as plain text: normalised, pre-tokenised and split by the model, with no
    added or special token recognised (a `tokenizer(...)` call would turn `<think>` into one)."""
    if not text:
        return []
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer is not None else [(text, None)]
    return [token.id for piece, _ in pieces for token in backend.model.tokenize(piece)]


@lru_cache(maxsize=8)
def _markers(tokenizer) -> tuple[re.Pattern, dict[str, int]]:
    added = {token.content: i for i, token in tokenizer.added_tokens_decoder.items()}
    longest_first = sorted(added, key=len, reverse=True) or ["\ue002"]  # (no markers: a pattern that never matches)
    return re.compile("(" + "|".join(map(re.escape, longest_first)) + ")"), added


def render_ids(tokenizer, messages: list[dict], **template_options) -> list[int]:
    """The chat template's ids around `messages`, whose text stays text."""
    return _encode(tokenizer, _skeleton(tokenizer, messages, **template_options), messages)


def reply_prefix_ids(tokenizer, prompt: str) -> list[int]:
    """What a Stream model reads before the first reply token, as its model card feeds it: the
    checkpoint's template over [user, assistant] with thinking off, cut where the assistant's text
    begins (found by rendering a sentinel reply). Whatever the template writes between the turns,
    Qwen3's empty `<think>\n\n</think>\n\n` included, is in; nothing of the reply is."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
    skeleton = _skeleton(tokenizer, messages, add_generation_prompt=False, enable_thinking=False)
    reply_at = skeleton.find(_PLACEHOLDER.format(1))
    if reply_at < 0:
        raise ValueError("the chat template does not render the assistant's reply, so where a reply starts is unknown")
    return _encode(tokenizer, skeleton[:reply_at], messages)


def _skeleton(tokenizer, messages: list[dict], **template_options) -> str:
    """The rendered template with a placeholder for each message's text."""
    marked = [{**m, "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)]
    return tokenizer.apply_chat_template(marked, tokenize=False, **template_options)


def _encode(tokenizer, skeleton: str, messages: list[dict]) -> list[int]:
    pattern, added = _markers(tokenizer)
    ids: list[int] = []
    for i, part in enumerate(pattern.split(skeleton)):
        if i % 2:  # a marker the template wrote
            ids.append(added[part])
        else:
            ids += encode_text(tokenizer, _PLACEHOLDERS.sub(lambda m: messages[int(m.group(1))]["content"], part))
    return ids
