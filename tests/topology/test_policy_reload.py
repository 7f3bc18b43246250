"""Policies that change live: `policy set` under a steady load, a bad document, observe mode (for
conversations and reply streams), and a client that starts after the changes."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from datetime import datetime

import pytest
from aiokafka import AIOKafkaProducer

from guardstream.client import Guard
from guardstream.dev.stream_reference import StreamGuardReference
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.kafka_io import records, set_policy, topic_name
from guardstream.schemas import Moderate
from guardstream.wire.policy import Policy
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest

from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.metrics import scrape
from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import wait_drained
from tests.helpers.stream_helpers import build_streams, interleaved_chunks, reference_stop
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

TENANT, CONTROL = "reload-a", "reload-b"  # the tenant whose policy changes, and one no change may touch
QUESTION = [{"role": "user", "content": "is the government right about gun control"}]  # the corpus: Controversial
LOOSE, STRICT, OBSERVE = {"mode": "loose"}, {"mode": "strict"}, {"mode": "observe"}
FLIPS = 4
WITHIN_S = 5
# how long each version is watched deciding alone, past WITHIN_S: long enough that a worker slowed by a
# busy machine still delivers verdicts in each window (at about 1 s, one came up empty under load)
WATCHED_S = 3


def mine(value: dict) -> bool:
    return value.get("source_event_id", "").startswith("reload-")


def when(value: dict) -> float:
    return datetime.fromisoformat(value["produced_at"]).timestamp()


async def steady_load(settings, bootstrap: str, stop: asyncio.Event, sent: list[str]) -> None:
    """Ten conversations a second for each of the two tenants, until stopped."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10_000):
            if stop.is_set():
                return
            for tenant in (TENANT, CONTROL):
                event = {"event_id": f"reload-{tenant}-{i:05d}", "conversation_id": f"reload-{tenant}-{i % 50}",
                         "tenant": tenant, "messages": QUESTION}
                await producer.send_and_wait(topic_name(settings, "conversations"), json.dumps(event).encode(),
                                             key=event["conversation_id"].encode())
                sent.append(event["event_id"])
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()


async def first_verdict_of(settings, bootstrap: str, version: str, since: float, timeout_s: float = 30) -> float:
    """Seconds from `since` to the produced_at of the first verdict of TENANT under `version`
    (read as they come: under a steady load the topic is never idle)."""
    deadline = time.monotonic() + timeout_s
    async for message in records(settings, bootstrap, "verdicts", until=lambda: time.monotonic() > deadline):
        value = json.loads(message.value)
        if mine(value) and value.get("policy_version") == version:
            return when(value) - since
    raise AssertionError(f"no verdict of {TENANT} under {version} within {timeout_s}s of its `policy set`")


async def raw_policy_record(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def test_policy_changes_reach_every_new_verdict_within_seconds_and_lose_or_repeat_none(worker):
    settings, bootstrap = worker.settings, worker.bootstrap
    sent: list[str] = []
    # seconds from each `policy set` to its first verdict; (version, set at, policy, asked at): `policy set`
    # returns once it has read its record back, so the version may decide a little before it returns
    delays, changes = [], []

    async def run() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(settings, bootstrap, stop, sent))
        try:
            await asyncio.sleep(2)
            for flip in range(FLIPS):  # loose and strict by turns: Controversial is allowed, then blocked
                document, asked = LOOSE if flip % 2 == 0 else STRICT, time.time()
                version = await set_policy(settings, bootstrap, TENANT, document, "test")
                changes.append((version, time.time(), document, asked))
                delays.append(await first_verdict_of(settings, bootstrap, f"{TENANT}@{version}", changes[-1][1]))
                await asyncio.sleep(WITHIN_S + WATCHED_S)  # every verdict from WITHIN_S on is the new version's
            # another producer writes an invalid document: dead-lettered, the previous version decides
            await raw_policy_record(bootstrap, topic_name(settings, "policies"), f"{TENANT}/99/rogue".encode(), json.dumps(
                {"tenant": TENANT, "version": 99, "set_by": "rogue", "policy": {"mode": "lenient"}}).encode())
            await asyncio.sleep(WITHIN_S + WATCHED_S)
            asked = time.time()
            version = await set_policy(settings, bootstrap, TENANT, OBSERVE, "test")
            changes.append((version, time.time(), OBSERVE, asked))
            delays.append(await first_verdict_of(settings, bootstrap, f"{TENANT}@{version}", changes[-1][1]))
            await asyncio.sleep(WITHIN_S + WATCHED_S)
        finally:
            stop.set()
            await load

    asyncio.run(run())
    asyncio.run(wait_drained(settings, bootstrap, "conversations"))
    verdicts = read_all(settings, bootstrap, "verdicts", mine)

    counts = Counter(v["source_event_id"] for v in verdicts)
    assert set(counts) == set(sent) and set(counts.values()) == {1}, "a verdict lost or judged twice"
    control = [v for v in verdicts if v["tenant"] == CONTROL]
    assert {(v["policy_version"], v["action"]) for v in control} == {("default@0", "block")}
    mine_only = sorted((v for v in verdicts if v["tenant"] == TENANT), key=when)
    for (version, set_at, document, _), ends in zip(changes, [c[3] for c in changes[1:]] + [float("inf")]):
        settled = [v for v in mine_only if set_at + WITHIN_S < when(v) < ends]
        expected = {"loose": "allow", "strict": "block", "observe": "allow"}[document["mode"]]
        assert settled and {(v["policy_version"], v["action"]) for v in settled} == {(f"{TENANT}@{version}", expected)}
    observed = [v for v in mine_only if v["policy_version"] == f"{TENANT}@{changes[-1][0]}"]
    assert all(v["observed"] and v["would_action"] == "block" for v in observed)
    print(f"\npolicy reload delay over {len(delays)} changes: p50 {statistics.median(delays):.2f}s, "
          f"max {max(delays):.2f}s ({', '.join(f'{d:.2f}' for d in delays)})")
    assert max(delays) < WITHIN_S

    letters = read_all(settings, bootstrap, "dlq", lambda v: v["topic"] == topic_name(settings, "policies"))
    assert letters and all("mode" in v["error"] and v["error_code"] == "invalid_schema" for v in letters)
    actions = read_all(settings, bootstrap, "actions", lambda v: v["verdict_id"] in {o["verdict_id"] for o in observed})
    assert actions and all(a["observed"] and a["would_action"] == "block" and a["action"] == "allow" for a in actions)
    eventually(lambda: scrape(settings.metrics_port, "guardstream_would_action_total").get(
        (("action", "block"), ("language", "other"), ("tenant", TENANT)), 0) >= len(observed), 30,
        "observed actions counted")
    assert scrape(settings.metrics_port, "guardstream_policy_rejected_total")[()] >= 1

    async def fresh_client() -> str:  # a process started now reads the topic whole before it serves
        async with Guard(bootstrap, settings.model_copy(update={"policy": Policy()})) as guard:
            return guard.policies.version(TENANT)

    assert asyncio.run(fresh_client()) == f"{TENANT}@{changes[-1][0]}"


def test_an_observed_tenants_streams_run_to_their_end_and_say_where_they_would_have_stopped(worker, tiny):
    settings, bootstrap, tenant = worker.settings, worker.bootstrap, "observe-streams"
    asyncio.run(set_policy(settings, bootstrap, tenant, OBSERVE, "test"))
    tok = cached_tokenizer(tiny.stream)
    model = StreamGuardReference.from_pretrained(tiny.stream)
    streams = [dict(s, id=f"os-{s['id']}") for s in build_streams(tok)[:8]]
    expected = {s["id"]: reference_stop(model, tok, s) for s in streams}
    assert sum(v is not None for v in expected.values()) >= 2  # some would be stopped
    produce(settings, bootstrap, [dict(e, tenant=tenant) for e in interleaved_chunks(streams)], role="chunks")
    asyncio.run(wait_drained(settings, bootstrap, "chunks", timeout_s=120))
    verdicts = read_all(settings, bootstrap, "verdicts", lambda v: (v.get("stream") or {}).get("stream_id", "").startswith("os-"))
    assert verdicts and all(v["action"] == "allow" and v["observed"] for v in verdicts)  # never stopped, never blocked
    finals = {v["stream"]["stream_id"]: v for v in verdicts if v["stream"]["final"]}
    assert set(finals) == set(expected)
    for stream_id, stop in expected.items():
        final = finals[stream_id]
        assert final["stream"]["stop_token"] is None and final["stream"]["would_stop_token"] == stop, stream_id
        assert final["would_action"] == ("block" if stop is not None else "allow"), stream_id
    would_stops = Counter(v["stream"]["stream_id"] for v in verdicts if v["would_action"] == "stop")
    assert would_stops == Counter(sid for sid, stop in expected.items() if stop is not None)


def sure_and_less_sure(tiny) -> tuple[list[str], float]:
    """Six English corpus prompts the fixture model calls Unsafe, asked directly: the three it is least
    sure of and the three it is surest of, with a threshold halfway between the two. Chosen from the
    model as built here, as how sure it is of any one prompt changes with the CPU that trained it."""
    texts = sorted({ex.messages[0]["content"] for ex in load_corpus()
                    if ex.kind == "prompt" and ex.label == "Unsafe" and ex.language is None})
    results = GenEngine(str(tiny.gen)).classify([GenRequest([{"role": "user", "content": text}], Moderate.prompt)
                                                 for text in texts])
    unsafe = sorted((r.probabilities["Unsafe"] + r.probabilities["Controversial"], text)
                    for text, r in zip(texts, results) if r.judgement.risk_level.value == "Unsafe")
    assert len(unsafe) >= 6, unsafe
    chosen = unsafe[:3] + unsafe[-3:]
    return [text for _, text in chosen], (chosen[2][0] + chosen[3][0]) / 2


def test_an_unsafe_threshold_set_live_decides_by_probability_for_its_tenant_or_language_only(worker, tiny):
    """threshold-a: the threshold for all its events; lang-a: only for its events in Spanish (the
    producer says so; its others the detector tells English); threshold-b: by the labels."""
    (settings, bootstrap), (prompts, threshold) = (worker.settings, worker.bootstrap), sure_and_less_sure(tiny)
    asyncio.run(set_policy(settings, bootstrap, "threshold-a", {"mode": "strict", "unsafe_threshold": threshold}, "test"))
    asyncio.run(set_policy(settings, bootstrap, "lang-a", {"languages": {"es": {"unsafe_threshold": threshold}}}, "test"))
    time.sleep(WITHIN_S)  # the change reaches every worker within seconds (the test above measures it)
    sent = {"threshold-a": None, "threshold-b": None, "lang-a": "es", "lang-a-en": None}
    events = [{"event_id": f"thr-{name}-{i}", "conversation_id": f"thr-{name}-{i}", "tenant": name.removesuffix("-en"),
               "messages": [{"role": "user", "content": text}], **({"language": language} if language else {})}
              for name, language in sent.items() for i, text in enumerate(prompts)]
    produce(settings, bootstrap, events)
    asyncio.run(wait_drained(settings, bootstrap, "conversations", timeout_s=120))
    verdicts = {v["source_event_id"]: v for v in read_all(settings, bootstrap, "verdicts",
                                                          lambda v: v["source_event_id"].startswith("thr-"))}
    assert set(verdicts) == {e["event_id"] for e in events}
    def spanish(event_id: str) -> bool:
        return event_id.startswith("thr-lang-a-") and not event_id.startswith("thr-lang-a-en-")

    for event_id, v in verdicts.items():
        assert v["risk_level"] == "Unsafe", event_id  # the verdict keeps the model's label either way
        assert v["language"] == ("es" if spanish(event_id) else "en"), event_id
        unsafe = v["probabilities"]["Unsafe"] + v["probabilities"]["Controversial"]
        if spanish(event_id) or event_id.startswith("thr-threshold-a-"):
            assert v["action"] == ("block" if unsafe >= threshold else "allow"), event_id
            assert f"threshold={threshold:g}" in v["policy"]
        else:
            assert v["action"] == "block" and "threshold=" not in v["policy"], event_id  # by its label, as before
    for decided in (lambda k: k.startswith("thr-threshold-a-"), spanish):
        actions = Counter(v["action"] for k, v in verdicts.items() if decided(k))
        assert actions["allow"] and actions["block"]  # the threshold fell between them: it decided both ways
    eventually(lambda: scrape(settings.metrics_port, "guardstream_actions_total").get(
        (("action", "allow"), ("language", "es"), ("tenant", "lang-a")), 0) >= 1, 30, "Spanish actions counted as es")
