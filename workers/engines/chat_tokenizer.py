"""A checkpoint's tokenizer without transformers: its tokenizer.json through `tokenizers` (which
transformers' fast tokenizers wrap) and its chat template rendered as transformers renders it (a
sandboxed Jinja environment with the same options, filters and variables). Importing transformers,
and torch with it, cost the worker's process about 10 s of CPU at each start, for this alone, and a
Gen actor about 5 s more than torch; this imports in about 0.1 s. Its lengths, markers, templates,
ids and decoded text equal transformers' (tests/workers/engines/test_chat_tokenizer.py). What it
leaves out: the clean-up of spaces in decoded text, which transformers skips for BPE tokenizers
such as Qwen's, and padding (Gen's `generate` mode, transformers' own, uses transformers')."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path

from tokenizers import Tokenizer

from guardstream.workers.engines.checkpoint_files import TOKENIZER, checkpoint_dir

# the named special tokens a template may read (transformers passes these, and no others, to it)
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class ChatTokenizer:
    """What the engines, `framing.py` and `retokenize.py` read of a tokenizer, under transformers' names."""

    def __init__(self, backend: Tokenizer, chat_template: str | None, special_tokens: dict[str, str]):
        self.backend_tokenizer, self.chat_template, self.special_tokens = backend, chat_template, special_tokens
        self.added_tokens_decoder = backend.get_added_tokens_decoder()

    @classmethod
    def from_pretrained(cls, model: str | Path) -> ChatTokenizer:
        """From a checkpoint directory or a hub id, as `AutoTokenizer.from_pretrained` reads it: the
        template in chat_template.jinja, else in tokenizer_config.json."""
        path = checkpoint_dir(model, TOKENIZER)
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        template = config.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if (path / "chat_template.jinja").exists():
            template = (path / "chat_template.jinja").read_text()
        special = {name: value["content"] if isinstance(value, dict) else value
                   for name in SPECIAL_TOKENS if (value := config.get(name)) is not None}
        return cls(Tokenizer.from_file(str(path / "tokenizer.json")), template, special)

    def __len__(self) -> int:
        """The vocabulary with the added tokens: ids at or past it are not the checkpoint's."""
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        """The ids of `text`, its added tokens (`<|im_end|>`...) matched: for the engines' own strings."""
        return {"input_ids": self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}

    def batch_decode(self, sequences: list[list[int]], skip_special_tokens: bool = False) -> list[str]:
        return self.backend_tokenizer.decode_batch(sequences, skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.backend_tokenizer.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self.convert_tokens_to_ids(self.special_tokens["eos_token"]) if "eos_token" in self.special_tokens else None

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False,
                            **options) -> str:
        """The rendered template, as text (`framing.py` encodes it, keeping message text as text)."""
        if tokenize:
            raise ValueError("ChatTokenizer renders the template as text only; encode it with framing.render_ids")
        if self.chat_template is None:
            raise ValueError("the checkpoint has no chat template; Qwen3Guard checkpoints carry one")
        return _compiled(self.chat_template).render(messages=messages, tools=None, documents=None,
                                                    add_generation_prompt=add_generation_prompt,
                                                    **{**self.special_tokens, **options})


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """The template in transformers' environment for chat templates: sandboxed, trimmed blocks, loop
    controls, its `tojson` (no HTML escaping), `raise_exception` and `strftime_now`."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
    environment.filters["tojson"] = tojson
    environment.globals.update(raise_exception=raise_exception,
                               strftime_now=lambda format: datetime.now().strftime(format))
    return environment.from_string(template)
