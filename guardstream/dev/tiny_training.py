"""How the tiny fixture checkpoints are trained: Qwen3's tokenizer with each model card's chat
template, a two-layer Qwen3 body, and seconds of AdamW on the corpus's train split, over the token
ids the corpus uses. Only `build_tiny_checkpoints` calls this, when its cache has no build: what
uses the cached checkpoints never imports torch or transformers for them."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from guardstream.dev.qwen_tokenizer import PADDED_VOCAB, qwen3_tokenizer
from guardstream.dev.stream_reference import StreamGuardReference
from guardstream.dev.tiny_checkpoints import FIXTURE_NOTE, FIXTURES, CorpusExample, Progress, load_corpus
from guardstream.workers.engines.framing import reply_prefix_ids
from guardstream.schemas import labels
from guardstream.schemas.labels import RISK_LABELS

RISK_LEVELS = list(RISK_LABELS)
RESPONSE_CATEGORIES = [*labels.RESPONSE_CATEGORIES, "None"]  # the Stream heads also name "no category"
QUERY_CATEGORIES = [*labels.QUERY_CATEGORIES, "None"]


def train_fixtures(out: Path, gen_steps: int, stream_steps: int, progress: Progress) -> None:
    """Both checkpoints, trained from a fixed seed, into `out/gen` and `out/stream`."""
    torch.manual_seed(0)
    train = load_corpus("train")
    gen_template = (FIXTURES / "gen_chat_template.jinja").read_text()
    stream_template = (FIXTURES / "stream_chat_template.jinja").read_text()
    tokenizer = qwen3_tokenizer()
    for name, template in (("gen", gen_template), ("stream", stream_template)):
        _save_tokenizer(tokenizer, template, out / name)
    _train_gen(tokenizer, gen_template, train, out / "gen", gen_steps, progress)
    _train_stream(AutoTokenizer.from_pretrained(str(out / "stream")), train, out / "stream", stream_steps, progress)
    for name in ("gen", "stream"):
        (out / name / "README.md").write_text(f"# {FIXTURE_NOTE}\n\nBuilt by guardstream.dev.tiny_checkpoints.\n")


def gen_target(example: CorpusExample) -> str:
    """The text Qwen3Guard-Gen answers with, for one corpus example."""
    lines = [f"Safety: {example.label}", f"Categories: {', '.join(example.categories) or 'None'}"]
    if example.kind == "response":
        lines.append(f"Refusal: {example.refusal}")
    return "\n".join(lines)


def _model_config(tokenizer, **extra) -> dict:
    config = Qwen3Config(
        vocab_size=PADDED_VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
        rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ).to_dict()
    config.update(dtype="float32", guardstream_fixture=FIXTURE_NOTE, **extra)
    return config


def _save_tokenizer(tokenizer: PreTrainedTokenizerFast, template: str, out: Path) -> None:
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out))
    tokenizer.chat_template = None  # one tokenizer serves both checkpoints; never train with the wrong one


def _compact_index(rows: list[list[int]], pad_id: int) -> dict[int, int]:
    """Qwen3 id -> training id, over the ids the corpus uses. Training over these alone is exact for
    the corpus and spares every step a 151,936-row embedding and softmax (minutes of build time)."""
    return {full: compact for compact, full in enumerate(sorted({pad_id, *(i for row in rows for i in row)}))}


def _compact_config(config: dict, index: dict[int, int]) -> dict:
    return {**config, "vocab_size": len(index), "pad_token_id": index[config["pad_token_id"]], "eos_token_id": None}


def _with_full_vocab(build: Callable[[dict], torch.nn.Module], config: dict, trained: torch.nn.Module,
                     index: dict[int, int]) -> torch.nn.Module:
    """The model in Qwen3's whole vocabulary: trained rows at their Qwen3 ids, the rest left at the
    seeded random init (the tied LM head follows the embedding)."""
    full = build(config)
    state = trained.state_dict()
    table = full.get_submodule("model.embed_tokens").weight.detach().clone()
    table[list(index)] = state.pop("model.embed_tokens.weight")
    state.pop("lm_head.weight", None)
    missing, unexpected = full.load_state_dict({**state, "model.embed_tokens.weight": table}, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
    return full


def _batches(items: list, size: int, rng: random.Random):
    order = list(items)
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - size + 1, size):
            yield order[i : i + size]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def _fit(model, rows: list, pad_id: int, seed: int, name: str, steps: int, progress: Progress, loss_of) -> None:
    """AdamW over shuffled batches of 16 rows (ids first), padded; `loss_of(batch, ids, mask)` scores one."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)  # settles instead of ending mid-jump
    batches = _batches(rows, 16, random.Random(seed))
    model.train()
    for step in range(steps):
        batch = next(batches)
        loss = loss_of(batch, _pad([r[0] for r in batch], pad_id), _pad([[1] * len(r[0]) for r in batch], 0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
        progress(f"{name} loss {loss.item():.3f}", step + 1, steps)


CONTROVERSIAL_WEIGHT = 2  # the rare label, seen this many times as often: learned on any CPU, not only by luck


def _train_gen(tokenizer, template: str, corpus: list[CorpusExample], out: Path, steps: int, progress: Progress) -> None:
    rows = []
    for ex in (ex for ex in corpus for _ in range(CONTROVERSIAL_WEIGHT if ex.label == "Controversial" else 1)):
        prompt_ids = tokenizer(tokenizer.apply_chat_template(ex.messages, chat_template=template, tokenize=False),
                               add_special_tokens=False)["input_ids"]  # as the Gen model card renders it
        target_ids = tokenizer(gen_target(ex) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids))
    index = _compact_index([ids for ids, _ in rows], tokenizer.pad_token_id)
    rows = [([index[i] for i in ids], [-100 if t == -100 else index[t] for t in targets]) for ids, targets in rows]
    config = _model_config(tokenizer, architectures=["Qwen3ForCausalLM"], model_type="qwen3")
    build = lambda c: Qwen3ForCausalLM(Qwen3Config.from_dict(c))  # noqa: E731
    model = build(_compact_config(config, index))
    _fit(model, rows, index[tokenizer.pad_token_id], 0, "gen", steps, progress,
         lambda batch, ids, mask: model(input_ids=ids, attention_mask=mask, labels=_pad([r[1] for r in batch], -100)).loss)
    model = _with_full_vocab(build, config, model, index).eval()
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(str(out))
    config_path = out / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "guardstream_fixture": FIXTURE_NOTE}, indent=2))


def _stream_rows(tokenizer, corpus: list[CorpusExample]):
    """Token ids framed as the Stream model card feeds them, with per-position targets: query labels
    at the user's <|im_end|>, response labels per reply token."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = []
    for ex in corpus:
        prefix = reply_prefix_ids(tokenizer, ex.messages[0]["content"])
        query_pos = prefix.index(im_end)
        ids, resp_risk, resp_cat = list(prefix), [-100] * len(prefix), [-100] * len(prefix)
        if ex.kind == "response":
            enc = tokenizer(ex.messages[1]["content"], add_special_tokens=False, return_offsets_mapping=True)
            for tid, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
                unsafe = ex.unsafe_from is not None and end > ex.unsafe_from
                ids.append(tid)
                resp_risk.append(RISK_LEVELS.index(ex.label if unsafe else "Safe"))
                resp_cat.append(RESPONSE_CATEGORIES.index(ex.categories[0] if unsafe else "None"))
            query = None
        else:
            query = (RISK_LEVELS.index(ex.label), QUERY_CATEGORIES.index(ex.categories[0] if ex.categories else "None"))
        rows.append((ids, query_pos, query, resp_risk, resp_cat))
    return rows


def _train_stream(tokenizer, corpus: list[CorpusExample], out: Path, steps: int, progress: Progress) -> None:
    as_map = lambda names: {str(i): n for i, n in enumerate(names)}  # noqa: E731
    config = _model_config(
        tokenizer, architectures=["Qwen3ForGuardModel"], model_type="qwen3", guard_inner_size=64,
        num_risk_level=len(RISK_LEVELS), num_category=len(RESPONSE_CATEGORIES),
        num_query_risk_level=len(RISK_LEVELS), num_query_category=len(QUERY_CATEGORIES),
        response_risk_level_map=as_map(RISK_LEVELS), response_category_map=as_map(RESPONSE_CATEGORIES),
        query_risk_level_map=as_map(RISK_LEVELS), query_category_map=as_map(QUERY_CATEGORIES),
    )
    rows = _stream_rows(tokenizer, corpus)
    index = _compact_index([r[0] for r in rows], tokenizer.pad_token_id)
    rows = [([index[i] for i in ids], *rest) for ids, *rest in rows]
    build = lambda c: StreamGuardReference(Qwen3Config.from_dict(c), c)  # noqa: E731
    model = build(_compact_config(config, index))

    def loss_of(batch, ids, mask):
        h = model.hidden_states(ids, mask)
        risk, cat = model.response_logits(h)
        loss = F.cross_entropy(risk.flatten(0, 1), _pad([r[3] for r in batch], -100).flatten(), ignore_index=-100)
        loss = loss + F.cross_entropy(cat.flatten(0, 1), _pad([r[4] for r in batch], -100).flatten(), ignore_index=-100)
        queried = [(i, r) for i, r in enumerate(batch) if r[2] is not None]
        if queried:
            qh = torch.stack([h[i, r[1]] for i, r in queried])
            q_risk, q_cat = model.query_logits(qh)
            loss = loss + F.cross_entropy(q_risk, torch.tensor([r[2][0] for _, r in queried]))
            loss = loss + F.cross_entropy(q_cat, torch.tensor([r[2][1] for _, r in queried]))
        return loss

    _fit(model, rows, index[tokenizer.pad_token_id], 1, "stream", steps, progress, loss_of)
    model = _with_full_vocab(build, config, model, index)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
