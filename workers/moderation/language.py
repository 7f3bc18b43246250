"""An event's language, for a policy's per-language entries and for the verdict: the producer's
`language` field when it gives one (BCP 47), else a pinned offline detector, lingua (its wheel
carries its models; nothing is downloaded), over the start of the judged text.

Its cost, measured on the 2-core development machine with the 20 languages below, in lingua's
high-accuracy mode: 1.3 to 2.5 s and about 350 MB to load, once, in the detector's own process, then about 0.2 to 6 ms a
text up to 1,000 characters and 5 ms at 10,000, so only the first `MAX_CHARS` are read; a batch's
texts are told in one call on every core (2 to 2.5 times faster on 2 cores). A text too short or
too mixed to tell (\"ok\", \"1234\") has no language: the tenant's own policy applies."""

from __future__ import annotations

import functools
import json
import logging
import select
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)
DETECTED = ("en", "zh", "es", "ar", "fr", "de", "pt", "ru", "ja", "ko", "it", "hi", "tr", "vi", "id", "nl", "pl",
            "fa", "uk", "th")  # ISO 639-1: the languages told apart (others come out as the nearest, or none)
MAX_CHARS = 1000
CLOSEST_ONLY = 0.1  # lingua's minimum relative distance: below it, two languages are too close to call
ANSWER_S = 60  # a detector process silent this long (its start included) is taken as hung


class DetectorUnavailable(ConnectionError):
    """The detector's process died or hung on a batch twice over: transient (retried with the
    offsets held), since each try starts a new process."""


class LanguageDetector:
    """lingua in a process of its own, started (its models loaded) on first use or by `load()` (at a
    worker's start, off its event loop), and spoken to in JSON lines over its stdin and stdout.
    lingua 2.1 holds the GIL while it detects: in the worker's process, a batch's detection stopped
    the event loop for as long (70 ms of every 256 events on the 2-core machine). A process that
    dies or hangs is replaced, and one whose parent died ends with its stdin."""

    def __init__(self, languages: tuple[str, ...] = DETECTED, max_chars: int = MAX_CHARS):
        self.languages, self.max_chars = languages, max_chars
        self._process: subprocess.Popen | None = None
        self._talking = threading.Lock()  # one batch at a time on the pipe (agents call from threads)

    def load(self) -> LanguageDetector:
        from lingua import IsoCode639_1

        for code in self.languages:  # refused here by name, not as a process that failed to start
            if not hasattr(IsoCode639_1, code.upper()):
                raise ValueError(f"{code!r} is not an ISO 639-1 code the detector knows")
        with self._talking:
            if self._process is None:
                self._start()
        return self

    def _start(self) -> None:
        began = time.monotonic()
        self._process = subprocess.Popen([sys.executable, "-m", __name__, *self.languages], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE)
        self._ask([])  # answered once its models are loaded
        log.info("language detector: %d languages (%s) loaded in process %d in %.1fs", len(self.languages),
                 ",".join(self.languages), self._process.pid, time.monotonic() - began)

    def _ask(self, texts: list[str]) -> list[str | None]:
        self._process.stdin.write(json.dumps(texts).encode() + b"\n")
        self._process.stdin.flush()
        if not select.select([self._process.stdout], [], [], ANSWER_S)[0]:
            raise TimeoutError(f"no answer in {ANSWER_S}s")
        if not (line := self._process.stdout.readline()):
            raise EOFError(f"it exited ({self._process.poll()})")
        return json.loads(line)

    def close(self) -> None:
        with self._talking:
            if self._process is not None:
                self._process.kill()
                self._process.wait()
                self._process = None

    def language_of(self, text: str) -> str | None:
        """The ISO 639-1 code of the text's language, or None where it cannot tell."""
        return self.languages_of([text])[0]

    def languages_of(self, texts: list[str]) -> list[str | None]:
        """Each text's language, as `language_of` tells it: a batch is told in one call, on every core."""
        # lingua takes UTF-8 only: a lone surrogate (which a Python str may hold) is replaced, not raised on
        read = [text[:self.max_chars].encode("utf-8", "replace").decode("utf-8") for text in texts]
        with self._talking:
            for attempt in (1, 2):
                try:
                    if self._process is None:
                        self._start()
                    return self._ask(read)
                except (OSError, EOFError, TimeoutError, ValueError) as exc:  # a broken pipe, an exit, a hang, a garbled line
                    log.error("the language detector's process failed (%s); starting another", exc)
                    if self._process is not None:
                        self._process.kill()
                        self._process.wait()
                    self._process = None
                    if attempt == 2:
                        raise DetectorUnavailable(f"the language detector's process failed twice: {exc}") from exc


def _serve(languages: list[str]) -> None:
    """The detector's process: a JSON list of texts per line in, a JSON list of codes (or null) out."""
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    detector = (LanguageDetectorBuilder.from_iso_codes_639_1(*[getattr(IsoCode639_1, c.upper()) for c in languages])
                .with_minimum_relative_distance(CLOSEST_ONLY).with_preloaded_language_models().build())
    for line in sys.stdin.buffer:
        texts = json.loads(line)
        found = detector.detect_languages_in_parallel_of(texts) if len(texts) > 1 else \
            [detector.detect_language_of(t) for t in texts]
        sys.stdout.buffer.write(json.dumps([f.iso_code_639_1.name.lower() if f else None for f in found]).encode() + b"\n")
        sys.stdout.buffer.flush()


_LOADING = threading.Lock()


def loaded_detector(languages: tuple[str, ...]) -> LanguageDetector | None:
    """One loaded detector per process for these languages (a worker's agents and its canary share
    it, though they load from different threads); None for none."""
    with _LOADING:
        return _loaded(languages)


@functools.lru_cache(maxsize=4)
def _loaded(languages: tuple[str, ...]) -> LanguageDetector | None:
    return LanguageDetector(languages).load() if languages else None


def event_languages(events: list[tuple[str | None, str]], detector: LanguageDetector | None) -> list[str | None]:
    """Each event's language: the producer's when given (a `(given, text)` pair), else the detector's
    (None without a detector); the texts without a given language are told in one batch."""
    if detector is None:
        return [given or None for given, _ in events]
    told = iter(detector.languages_of([text for given, text in events if not given]))
    return [given or next(told) for given, _ in events]


if __name__ == "__main__":
    _serve(sys.argv[1:])
