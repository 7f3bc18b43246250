"""An event's language, for a policy's per-language entries and for the verdict: the producer's
`language` field when it gives one (BCP 47), else a pinned offline detector, lingua (its wheel
carries its models; nothing is downloaded), over the start of the judged text.

Its cost, measured on the 2-core development machine with the 20 languages below, in lingua's
high-accuracy mode: 1.3 to 2.5 s and about 350 MB to load once per process, then about 0.2 to 6 ms a
text up to 1,000 characters and 5 ms at 10,000, so only the first `MAX_CHARS` are read; a batch's
texts are told in one call on every core (2 to 2.5 times faster on 2 cores). A text too short or
too mixed to tell (\"ok\", \"1234\") has no language: the tenant's own policy applies."""

from __future__ import annotations

import functools
import logging
import threading
import time

log = logging.getLogger(__name__)
DETECTED = ("en", "zh", "es", "ar", "fr", "de", "pt", "ru", "ja", "ko", "it", "hi", "tr", "vi", "id", "nl", "pl",
            "fa", "uk", "th")  # ISO 639-1: the languages told apart (others come out as the nearest, or none)
MAX_CHARS = 1000
CLOSEST_ONLY = 0.1  # lingua's minimum relative distance: below it, two languages are too close to call


class LanguageDetector:
    """Loaded on first use or by `load()` (at a worker's start, off its event loop)."""

    def __init__(self, languages: tuple[str, ...] = DETECTED, max_chars: int = MAX_CHARS):
        self.languages, self.max_chars = languages, max_chars
        self._detector = None
        self._loading = threading.Lock()

    def load(self) -> LanguageDetector:
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        with self._loading:
            if self._detector is None:
                began = time.monotonic()
                try:
                    codes = [getattr(IsoCode639_1, code.upper()) for code in self.languages]
                except AttributeError as exc:
                    raise ValueError(f"{exc.name.lower()!r} is not an ISO 639-1 code the detector knows") from None
                self._detector = (LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
                                  .with_minimum_relative_distance(CLOSEST_ONLY).with_preloaded_language_models().build())
                log.info("language detector: %d languages (%s) loaded in %.1fs", len(codes), ",".join(self.languages),
                         time.monotonic() - began)
        return self

    def language_of(self, text: str) -> str | None:
        """The ISO 639-1 code of the text's language, or None where it cannot tell."""
        return self.languages_of([text])[0]

    def languages_of(self, texts: list[str]) -> list[str | None]:
        """Each text's language, as `language_of` tells it: a batch is told in one call, on every core."""
        if self._detector is None:
            self.load()
        # lingua takes UTF-8 only: a lone surrogate (which a Python str may hold) is replaced, not raised on
        read = [text[:self.max_chars].encode("utf-8", "replace").decode("utf-8") for text in texts]
        found = self._detector.detect_languages_in_parallel_of(read) if len(read) > 1 else \
            [self._detector.detect_language_of(t) for t in read]
        return [f.iso_code_639_1.name.lower() if f is not None else None for f in found]


@functools.lru_cache(maxsize=4)
def loaded_detector(languages: tuple[str, ...]) -> LanguageDetector | None:
    """One loaded detector per process for these languages (a worker's agents and its canary share
    it); None for none."""
    return LanguageDetector(languages).load() if languages else None


def event_language(given: str | None, text: str, detector: LanguageDetector | None) -> str | None:
    """The producer's language when given, else the detector's (None without a detector)."""
    return event_languages([(given, text)], detector)[0]


def event_languages(events: list[tuple[str | None, str]], detector: LanguageDetector | None) -> list[str | None]:
    """`event_language` of each (given, text), the texts without a given language told in one batch."""
    if detector is None:
        return [given or None for given, _ in events]
    told = iter(detector.languages_of([text for given, text in events if not given]))
    return [given or next(told) for given, _ in events]
