"""Chaos on the real broker, Ray and PostgreSQL: conversation events, reply streams and malformed
records arrive at a steady rate while the worker is SIGKILLed twice and a Ray actor once.

Afterwards: every valid event and chunk has a verdict, every malformed record is a dead letter
with a code, every stream has exactly one final verdict, the audit trail holds exactly the
distinct verdict ids, and no process of the app is left running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import pytest

from tests.helpers.chaos import MALFORMED, app_processes, assert_every_outcome, produce_steadily, workload
from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import POLICY, start_worker, wait_drained

pytestmark = pytest.mark.integration

APP, PREFIX, EVENTS, STREAMS = "gs-chaos", "ch", 300, 15


def test_chaos_loses_no_verdict_and_leaves_no_process(broker, tiny, pg_url, tmp_path):
    tok = cached_tokenizer(tiny.stream)
    items = workload(tok, PREFIX, EVENTS, STREAMS)
    env = dict(app_id=APP, topic_prefix=f"{PREFIX}.", audit_url=pg_url, policy=json.dumps(POLICY))
    kills = {"workers": 0, "actors": 0}
    worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "w0.log", **env)
    done = threading.Event()
    producer = threading.Thread(target=produce_steadily, args=(worker.settings, broker.bootstrap, items, 75, done))
    producer.start()
    try:
        for round_ in (1, 2):
            time.sleep(10)
            if round_ == 2:  # a Ray actor first, then its worker
                os.kill(worker.actor_pids("GenGuard")[-1], signal.SIGKILL)
                kills["actors"] += 1
                time.sleep(6)
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(30)
            kills["workers"] += 1
            worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / f"w{round_}.log", **env)
        producer.join(300)
        assert done.is_set()
        for role in ("conversations", "chunks", "verdicts"):
            asyncio.run(wait_drained(worker.settings, broker.bootstrap, role, timeout_s=300))
        assert "Traceback" not in worker.log()
    finally:
        worker.stop()
    deadline = time.monotonic() + 30
    while app_processes(APP) and time.monotonic() < deadline:
        time.sleep(1)
    assert not app_processes(APP), [p.name() for p in app_processes(APP)]

    found = assert_every_outcome(worker.settings, broker.bootstrap, items, pg_url, PREFIX, STREAMS, EVENTS)
    print(f"chaos: {found.valid} valid events and chunks, {len(MALFORMED)} malformed, {kills['workers']} worker kills, "
          f"{kills['actors']} actor kill(s), none without a verdict, {found.verdict_records} verdict records "
          f"({found.distinct_verdicts} distinct = {found.audit_rows} audit rows)")
