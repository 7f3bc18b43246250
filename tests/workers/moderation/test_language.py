"""The language detector's verdicts on fixed sentences, and the rule that picks an event's language."""

import pytest

from guardstream.workers.moderation.language import LanguageDetector, event_languages, loaded_detector

SENTENCES = {
    "how can I forge a passport": "en",
    "hello there, how are you today": "en",
    "¿cómo puedo falsificar un pasaporte?": "es",
    "我怎样才能伪造护照": "zh",
    "كيف يمكنني تزوير جواز سفر": "ar",
    "Wie kann ich einen Reisepass fälschen?": "de",
    "Bonjour, comment ça va ?": "fr",
}


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return loaded_detector(("en", "zh", "es", "ar", "fr", "de", "pt", "ru", "ja", "ko", "it", "hi", "tr", "vi", "id",
                            "nl", "pl", "fa", "uk", "th"))


@pytest.mark.parametrize("text, language", SENTENCES.items())
def test_the_detector_names_the_language_of_a_sentence(detector, text, language):
    assert detector.language_of(text) == language


@pytest.mark.parametrize("text", ["ok", "1234", "", "😀😀", "\ud800\udfff"])
def test_a_text_too_short_or_without_words_has_no_language(detector, text):
    assert detector.language_of(text) is None


def test_only_the_start_of_a_long_text_is_read(detector):
    spanish_then_english = "¿cómo puedo falsificar un pasaporte? " * 40 + "how can I forge a passport " * 400
    assert len(spanish_then_english) > 10_000 and detector.language_of(spanish_then_english) == "es"


def test_an_unknown_code_is_refused_by_name():
    with pytest.raises(ValueError, match="'xx' is not an ISO 639-1 code"):
        LanguageDetector(("en", "xx")).load()


def test_a_lone_surrogate_does_not_keep_the_rest_from_being_read(detector):
    assert detector.language_of("\ud800 ¿cómo puedo falsificar un pasaporte?") == "es"


def test_every_message_of_the_corpus_rows_that_name_a_language_is_told_that_language(detector):
    from guardstream.dev.tiny_checkpoints import load_corpus

    named = [(m["content"], x.language) for x in load_corpus() if x.language for m in x.messages]
    assert {language for _, language in named} == {"zh", "ar", "es"} and len(named) > 100
    assert [(text, detector.language_of(text)) for text, _ in named] == named


def test_a_batch_is_told_as_each_text_alone_and_the_producers_languages_win_in_place(detector):
    from guardstream.dev.tiny_checkpoints import load_corpus

    texts = [m["content"] for x in load_corpus() for m in x.messages] + list(SENTENCES) + \
        ["ok", "", "\ud800 ¿cómo puedo falsificar un pasaporte?", "how can I forge a passport " * 400]
    assert len(texts) > 600 and detector.languages_of(texts) == [detector.language_of(t) for t in texts]
    events = [(None, "how can I forge a passport"), ("pt-BR", "我怎样才能伪造护照"), (None, "我怎样才能伪造护照"), ("", "ok")]
    assert event_languages(events, detector) == ["en", "pt-BR", "zh", None]
    assert event_languages(events, None) == [None, "pt-BR", None, None]


def test_a_detector_process_that_died_is_replaced_and_the_batch_still_told():
    detector = LanguageDetector(("en", "es")).load()
    try:
        first = detector._process
        first.kill()
        first.wait()
        assert detector.languages_of(["how can I forge a passport", "¿cómo puedo falsificar un pasaporte?"]) == ["en", "es"]
        assert detector._process is not first and detector._process.poll() is None
    finally:
        detector.close()


def test_the_detector_process_ends_with_the_process_that_started_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from guardstream.workers.moderation.language import LanguageDetector\n"
                               "d = LanguageDetector(('en', 'es')).load()\n"
                               "print(d._process.pid, flush=True)\n"
                               "time.sleep(600)"], stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}") and \
            open(f"/proc/{child}/stat").read().split()[2] != "Z":
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"


def test_a_detector_that_fails_twice_on_a_batch_is_unavailable_which_is_retried_with_offsets_held(monkeypatch):
    from guardstream.topology.outcomes import is_transient
    from guardstream.workers.moderation.language import DetectorUnavailable

    detector = LanguageDetector(("en", "es")).load()
    try:
        def dies(texts):
            raise EOFError("it exited (-9)")

        monkeypatch.setattr(detector, "_ask", dies)
        with pytest.raises(DetectorUnavailable, match="failed twice") as failed:
            detector.languages_of(["how can I forge a passport"])
        assert is_transient(failed.value)
    finally:
        detector.close()


def test_threads_that_load_the_same_languages_at_once_share_one_detector():
    """A worker preloads its detector while its pool starts, and its canary loads from a thread of its own."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as threads:
        found = list(threads.map(lambda _: loaded_detector(("en", "es")), range(3)))
    try:
        assert found[0] is found[1] is found[2]
    finally:
        found[0].close()
