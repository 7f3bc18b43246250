"""Scale-out for real: a Ray cluster started with `ray start` (a head and a second node, token
auth), one model pool made there by `guardstream pool`, and two `guardstream worker` processes of
the same app joining it with `--ray-address` (one on the GCS address, one through Ray Client). One worker is SIGKILLed under load and started
again. Every conversation and chunk still gets exactly one verdict, streams stop where the
reference stops them, the pool keeps its three actors (no worker makes its own), and the sessions
the killed worker opened stay on their actors instead of being rebuilt. Removing the pool stops
its workers."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest

from guardstream.dev.broker import free_port
from guardstream.dev.ray_cluster import descendants, ray_cluster
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.dev.stream_reference import StreamGuardReference

from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import RunningWorker, wait_drained
from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.stream_helpers import build_streams, interleaved_chunks, reference_stop

pytestmark = pytest.mark.integration

APP = "gs-scale"
POOL_GEN_BATCH = 3  # the pool's Gen batch; the workers' own setting says 16, and must not count
POOL_READY = f"model pool of app {APP} ready"


def model_actors(port: str) -> dict[int, tuple[str, int]]:
    """Every GenGuard/StreamGuard process of the cluster: pid → (class, pid of the raylet (node) running it)."""
    raylets = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "raylet"
               and any(port in a for a in p.info["cmdline"] or [])]
    found = {}
    for raylet in raylets:
        for child in descendants(raylet):
            title = " ".join(child.cmdline()) if child.is_running() else ""
            if match := re.match(r"ray::(?:[\w-]+:)?(GenGuard|StreamGuard)\b", title):  # named: ray::gen-0:GenGuard
                found[child.pid] = (match.group(1), raylet.pid)
    return found


def reported_pids(log: str, kind: str) -> set[int]:
    return {int(pid) for pid in re.findall(kind + r" ready: \{.*?'pid': (\d+)", log)}


def rebuilds(worker: RunningWorker) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.metrics_port}/metrics", timeout=10).read().decode()
    match = re.search(r"^guardstream_stream_rebuilds_total (\S+)$", body, re.M)
    return float(match.group(1)) if match else 0.0


def gen_batches(worker: RunningWorker) -> tuple[float, float]:
    """(batches of at most POOL_GEN_BATCH records, all batches) the worker's Gen agent sent to the pool."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.metrics_port}/metrics", timeout=10).read().decode()
    within = re.search(r'^guardstream_batch_records_bucket\{agent="gen",le="4\.0"\} (\S+)$', body, re.M)
    total = re.search(r'^guardstream_batch_records_count\{agent="gen"\} (\S+)$', body, re.M)
    return float(within.group(1)) if within else 0.0, float(total.group(1)) if total else 0.0


def join_worker(bootstrap: str, address: str, log_path: Path) -> RunningWorker:
    return RunningWorker(bootstrap, log_path, app_id=APP, topic_prefix="so.", ray_address=address, pool="join",
                         kafka_rebalance_timeout_s=6, kafka_session_timeout_s=6, metrics_port=free_port())


def wait_for_line(read, line: str, process: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while line not in read():
        gone = process.poll() is not None
        assert (not gone or line in read()) and time.monotonic() < deadline, \
            f"{what}: no {line!r} within {timeout_s:.0f}s (exit code {process.poll()}); log ends:\n{read()[-3000:]}"
        if gone:
            return
        time.sleep(0.5)


def quarters(items: list) -> list[list]:
    return [items[i * len(items) // 4 : (i + 1) * len(items) // 4] for i in range(4)]


def conversations(n: int) -> list[dict]:
    corpus = load_corpus()
    return [{"event_id": f"so-{i:03d}", "conversation_id": f"so-conv-{i // 2}", "tenant": "acme",
             "moderate": corpus[i % len(corpus)].kind, "messages": corpus[i % len(corpus)].messages} for i in range(n)]


def test_two_workers_share_one_pool_and_a_killed_one_loses_no_verdict(broker, tiny, tmp_path, monkeypatch):
    token = tmp_path / "ray-token"  # the cluster, the pool and the workers read the same token, as in the chart
    token.write_text(secrets.token_hex(16))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    tok = cached_tokenizer(tiny.stream)
    streams = build_streams(tok)[:16]
    reference = StreamGuardReference.from_pretrained(tiny.stream)
    expected = {s["id"]: reference_stop(reference, tok, s) for s in streams}
    chunks, events = interleaved_chunks(streams), conversations(60)
    chunk_parts, event_parts = quarters(chunks), quarters(events)

    with ray_cluster(head_cpus=2, node_cpus=1, keep_logs=tmp_path / "ray-logs") as (address, client_address):
        port = ":" + address.rsplit(":", 1)[1]
        workers = [join_worker(broker.bootstrap, address, tmp_path / "first.log")]
        pool = None
        try:
            wait_for_line(workers[0].log, "waiting for the model pool of app gs-scale", workers[0].process, 120,
                          "a worker started before the pool")
            pool_log, pool_port = tmp_path / "pool.log", free_port()
            with open(pool_log, "wb") as out:  # three actors of one CPU each fill both nodes: they must spread
                pool = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "pool", "--ray-address", address, "--app-id", APP,
                                         "--gen-model", str(tiny.gen), "--stream-model", str(tiny.stream), "--stream-actors", "2"],
                                        stdout=out, stderr=subprocess.STDOUT,
                                        env={**workers[0].env, "GUARDSTREAM_METRICS_PORT": str(pool_port),
                                             "GUARDSTREAM_GEN_ACTOR_CPUS": "1", "GUARDSTREAM_STREAM_ACTOR_CPUS": "1",
                                             "GUARDSTREAM_GEN_BATCH_SIZE": str(POOL_GEN_BATCH)})
            wait_for_line(pool_log.read_text, POOL_READY, pool, 300, "guardstream pool")
            assert urllib.request.urlopen(f"http://127.0.0.1:{pool_port}/readyz", timeout=10).status == 200
            workers[0].wait_ready()
            # the other worker connects as a Kubernetes pod would: through Ray Client
            workers.append(join_worker(broker.bootstrap, client_address, tmp_path / "second.log").wait_ready())
            wait_for_line(workers[1].log, "Setting newly assigned partitions", workers[1].process, 120, "the second worker")
            actors_before = model_actors(port)

            settings = workers[0].settings

            def send(part: int) -> None:
                produce(settings, broker.bootstrap, event_parts[part])
                produce(settings, broker.bootstrap, chunk_parts[part], role="chunks")

            send(0)  # both workers
            asyncio.run(wait_drained(settings, broker.bootstrap, "chunks", timeout_s=180))
            send(1)
            time.sleep(1.0)  # under load: the second worker has fetched part of this and answered some of it
            workers[1].process.send_signal(signal.SIGKILL)
            workers[1].process.wait(30)
            send(2)  # the survivor takes the killed worker's partitions
            workers.append(join_worker(broker.bootstrap, client_address, tmp_path / "third.log").wait_ready())
            wait_for_line(workers[2].log, "Setting newly assigned partitions", workers[2].process, 120, "the restarted worker")
            send(3)  # both workers again
            for role in ("chunks", "conversations"):
                asyncio.run(wait_drained(settings, broker.bootstrap, role, timeout_s=240))
            verdicts = {v["verdict_id"]: v for v in read_all(settings, broker.bootstrap, "verdicts")}
            actors_after = model_actors(port)
            rebuilt = [rebuilds(w) for w in (workers[0], workers[2])]
            batched = [gen_batches(w) for w in (workers[0], workers[2])]

            # removing the pool stops its workers (to be restarted onto a new one), never leaves them calling dead actors
            down = subprocess.run([sys.executable, "-m", "guardstream.cli", "pool", "--ray-address", address, "--app-id", APP,
                                   "--down"], env=workers[0].env, capture_output=True, text=True, timeout=120)
            assert down.returncode == 0 and "removed the model pool of app gs-scale (4 actors)" in down.stdout + down.stderr
            for w in (workers[0], workers[2]):
                wait_for_line(w.log, "was removed; stopping this worker", w.process, 60, "a worker whose pool was removed")
                assert w.process.wait(60) is not None
            assert model_actors(port) == {}
        finally:
            for w in workers:
                w.stop()
            if pool is not None:
                pool.terminate()
                pool.wait(30)

    # every event and chunk: exactly one verdict, none of them an error
    whole = [v for v in verdicts.values() if v.get("stream") is None]
    chunk_verdicts = [v for v in verdicts.values() if v.get("stream") and not v["stream"]["final"] and v["moderate"] == "response"]
    assert Counter(v["source_event_id"] for v in whole) == Counter(e["event_id"] for e in events)
    assert Counter(v["source_event_id"] for v in chunk_verdicts) == Counter(c["event_id"] for c in chunks)
    assert not [v for v in verdicts.values() if v["error"]]
    stops = Counter(v["stream"]["stream_id"] for v in chunk_verdicts if v["action"] == "stop")
    finals = {v["stream"]["stream_id"]: v for v in verdicts.values() if v.get("stream") and v["stream"]["final"]}
    for s in streams:
        assert stops[s["id"]] == (expected[s["id"]] is not None)
        assert finals[s["id"]]["stream"]["stop_token"] == expected[s["id"]]

    # one pool of three actors across both nodes, the same processes before and after the kill,
    # and every worker (the restarted one too) served by exactly those
    pool_text = pool_log.read_text()
    assert sorted(kind for kind, _ in actors_after.values()) == ["GenGuard", "StreamGuard", "StreamGuard"]
    assert actors_after == actors_before
    assert len({raylet for _, raylet in actors_after.values()}) == 2
    for kind in ("GenGuard", "StreamGuard"):
        served = reported_pids(pool_text, kind)
        assert served == {pid for pid, (k, _) in actors_after.items() if k == kind}
        assert all(reported_pids(w.log(), kind) == served for w in workers)

    # the takeover kept sessions on their actors: only streams caught mid-step are rebuilt
    print(f"scale-out: 2 workers (+1 restart), {len(actors_after)} actors on 2 nodes, 1 SIGKILL, "
          f"{len(events)} conversations and {len(chunks)} chunks of {len(streams)} streams, all with one verdict; "
          f"sessions rebuilt after the takeover: {rebuilt}")
    assert sum(rebuilt) < len(streams) / 2
    # the workers batch as the pool was made (1 actor × 3), not as their own settings say (16): no
    # batch of theirs held more than 4 records (the histogram's bucket above 3)
    assert all(total > 0 and within == total for within, total in batched), batched
