"""Bad input produced by a real client (kcat) becomes dead letters; good events keep flowing."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest
from aiokafka import AIOKafkaProducer

from guardstream.kafka_io import topic_name

from tests.helpers.pipeline import wait_drained
from tests.helpers.kafka_helpers import read_all

pytestmark = pytest.mark.integration

GOOD = {"tenant": "dlq-tenant", "messages": [{"role": "user", "content": "hello there, how are you today"}]}
BAD = {
    "dlq-notjson": ("this is not json {", "not_json"),
    "dlq-schema": (json.dumps({"event_id": "x1", "conversation_id": "dlq-schema", "messages": GOOD["messages"]}), "invalid_schema"),
    "dlq-role": (json.dumps({**GOOD, "event_id": "x2", "conversation_id": "dlq-role",
                             "messages": [{"role": "wizard", "content": "abracadabra"}]}), "invalid_schema"),
    "dlq-empty": (json.dumps({**GOOD, "event_id": "x3", "conversation_id": "dlq-empty", "messages": []}), "invalid_schema"),
    "dlq-huge": (json.dumps({**GOOD, "event_id": "x4", "conversation_id": "dlq-huge",
                             "messages": [{"role": "user", "content": "a" * 300_000}]}), "oversize"),
}


def test_bad_input_goes_to_the_dead_letter_topic_and_good_events_keep_flowing(worker, tmp_path):
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is needed (Debian package `kcat`; `make test` installs it)")
    lines = []
    for i, (key, (value, _)) in enumerate(BAD.items()):
        lines.append(f"dlq-good-{i}\t" + json.dumps({**GOOD, "event_id": f"dlq-good-{i}", "conversation_id": f"dlq-good-{i}"}))
        lines.append(f"{key}\t{value}")
    batch = tmp_path / "records.txt"
    batch.write_text("\n".join(lines) + "\n")
    topic = topic_name(worker.settings, "conversations")
    subprocess.run([kcat, "-b", worker.bootstrap, "-t", topic, "-P", "-K", "\t", "-l", str(batch)], check=True, timeout=60)

    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "conversations"))
    letters = {d["key"]: d for d in read_all(worker.settings, worker.bootstrap, "dlq", lambda d: str(d["key"]).startswith("dlq-"))}
    assert set(letters) == set(BAD)
    originals = {}
    for record in read_all_raw(worker, topic):
        originals[record[0]] = record[1:]
    for key, (value, code) in BAD.items():
        letter = letters[key]
        assert letter["error_code"] == code, letter
        assert (letter["topic"], letter["partition"], letter["offset"]) == (topic, *originals[key])
        assert letter["raw_size"] == len(value.encode()) and value.startswith(letter["raw_value"][:100])
    good = read_all(worker.settings, worker.bootstrap, "verdicts", lambda v: v["source_event_id"].startswith("dlq-good-"))
    assert sorted(v["source_event_id"] for v in good) == sorted(f"dlq-good-{i}" for i in range(len(BAD)))
    assert "Traceback" not in worker.log() and worker.process.poll() is None


def read_all_raw(worker, topic: str) -> list[tuple[str, int, int]]:
    """(key, partition, offset) of every record on the conversations topic."""
    from guardstream.kafka_io import records

    async def run():
        found = []
        async for message in records(worker.settings, worker.bootstrap, "conversations", idle_timeout_s=2):
            found.append((message.key.decode() if message.key else None, message.partition, message.offset))
        return found

    return asyncio.run(run())


def test_a_record_with_a_600_kb_key_is_one_dead_letter_and_stops_nothing(worker):
    """Its dead letter once copied the key twice, over the producer's 1 MB limit, and the Gen agent
    retried it for ever: nothing after it got a verdict. Now the letter carries a bounded excerpt."""
    key = b"k" * 600_000
    valid = [json.dumps({**GOOD, "event_id": f"bigkey-good-{i}", "conversation_id": f"bigkey-{i}"}).encode()
             for i in range(20)]

    async def send():
        producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap, acks="all", max_request_size=2 << 20)
        await producer.start()
        try:
            topic = topic_name(worker.settings, "conversations")
            await producer.send_and_wait(topic, b"not json {", key=key, partition=0)
            for value in valid:
                await producer.send_and_wait(topic, value, key=b"bigkey", partition=0)  # after it, on its partition
        finally:
            await producer.stop()

    asyncio.run(send())
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "conversations"))
    letters = read_all(worker.settings, worker.bootstrap, "dlq", lambda d: d.get("key_size") == len(key))
    assert len(letters) == 1 and letters[0]["error_code"] == "not_json" and len(letters[0]["key"]) == 4096
    good = read_all(worker.settings, worker.bootstrap, "verdicts", lambda v: v["source_event_id"].startswith("bigkey-good-"))
    assert sorted(v["source_event_id"] for v in good) == sorted(f"bigkey-good-{i}" for i in range(20))
