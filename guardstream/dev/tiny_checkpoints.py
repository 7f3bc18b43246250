"""Tiny TEST-FIXTURE checkpoints in the exact Qwen3Guard-Gen and Qwen3Guard-Stream formats.

These are NOT safety models. They are two layers wide of 128, trained for seconds on the synthetic
corpus in `fixtures/corpus.jsonl` so that their verdicts are meaningful on that corpus, and they
exist so that tests and the offline demo exercise the real loading code (config keys, label maps,
weight names, Qwen3's own tokenizer and a Qwen3-style chat template) on machines that cannot
download weights. head_dim is 64 so vLLM's CPU attention can load them too.

Builds are deterministic and cached under `$GUARDSTREAM_HOME/checkpoints/` by a hash of the
inputs; a file lock makes concurrent callers (test workers, the demo) build once. Finding a cached
build imports neither torch nor transformers (the training does, in `tiny_training`): a worker
given no models starts in seconds, not after ten of torch's import.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from guardstream.dev.qwen_tokenizer import qwen_bpe_file
from guardstream.topology.settings import Settings, default_home

FIXTURES = resources.files("guardstream.dev") / "fixtures"
FIXTURE_NOTE = "guardstream test fixture, NOT a safety model: trained on a tiny synthetic corpus"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CorpusExample:
    id: str
    split: str
    kind: str  # "prompt" or "response"
    messages: list[dict]
    label: str
    categories: list[str]
    refusal: str | None
    unsafe_from: int | None  # char offset in the reply where unsafe text starts
    language: str | None = None  # BCP 47, named on the rows that are not English


@dataclass(frozen=True)
class TinyCheckpoints:
    gen: Path
    stream: Path


def load_corpus(split: str | None = None) -> list[CorpusExample]:
    rows = [CorpusExample(**json.loads(line)) for line in (FIXTURES / "corpus.jsonl").read_text().splitlines()]
    return [r for r in rows if split is None or r.split == split]


def _inputs_digest(*settings: object) -> str:
    """A hash of what the build reads: its code, the BPE file, the fixtures, torch's version."""
    digest = hashlib.sha256(repr(settings).encode())
    code = [Path(importlib.util.find_spec(f"guardstream.{m}").origin).read_bytes()  # read, not imported
            for m in ("dev.tiny_checkpoints", "dev.tiny_training", "dev.qwen_tokenizer", "dev.stream_reference",
                      "workers.engines.framing")]
    for part in (*code, qwen_bpe_file().read_bytes(), *(f.read_bytes() for f in sorted(FIXTURES.iterdir(), key=lambda f: f.name)),
                 importlib.metadata.version("torch").encode()):
        digest.update(part)
    return digest.hexdigest()[:16]


def build_tiny_checkpoints(progress: Progress | None = None, gen_steps: int = 400, stream_steps: int = 300) -> TinyCheckpoints:
    """Return the cached fixture checkpoints, building them first (about a minute) if needed."""
    progress = progress or (lambda *_: None)
    key = _inputs_digest(gen_steps, stream_steps)
    root = default_home() / "checkpoints" / f"tiny-{key}"
    result = TinyCheckpoints(gen=root / "gen", stream=root / "stream")
    if (root / "DONE").exists():
        return result
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "DONE").exists():
            return result
        from guardstream.dev.tiny_training import train_fixtures

        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        train_fixtures(staging, gen_steps, stream_steps, progress)
        (staging / "DONE").write_text(key)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    return result


def with_fixture_models(settings: Settings) -> Settings:
    """The settings with Gen and Stream models: the ones given, or, loudly, these fixtures."""
    if settings.gen.model and settings.stream.model:
        return settings
    log = logging.getLogger("guardstream")
    log.warning("no --gen-model/--stream-model given: using the tiny TEST-FIXTURE checkpoints, which are not safety models")

    def report(what: str, done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            log.info("building tiny fixture checkpoints (once, then cached): step %d/%d, %s", done, total, what)

    tiny = build_tiny_checkpoints(report)
    gen, stream = settings.gen, settings.stream
    return settings.model_copy(update={"gen": gen.model_copy(update={"model": gen.model or str(tiny.gen)}),
                                       "stream": stream.model_copy(update={"model": stream.model or str(tiny.stream)})})
