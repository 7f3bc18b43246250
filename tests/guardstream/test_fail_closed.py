"""Every silence ends in the tenant's fail mode within the caller's timeout, against the real broker,
Ray and worker: the verdict reader crashed, the model pool frozen, the worker SIGKILLed, the broker
killed, each × {moderate, a guarded stream} × {fail-closed, fail-open}. The content is safe, so a
block can only come from the fail mode; a healthy round first shows that real verdicts say allow.

The worker's audit database never answers throughout: 6,000 verdicts still get their actions
while the audit sink's own consumer group commits nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from guardstream.client import Guard, conversation
from guardstream.dev.broker import free_port
from guardstream.dev.kafka import KafkaCluster
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.kafka_io import produce_lines, records, topic_name
from guardstream.schemas import Action, Moderate, RiskLevel, VerdictEvent
from guardstream.topology.settings import Settings
from guardstream.wire.policy import Policy
from guardstream.workers.pools.local_ray import reap_leftovers

from tests.helpers.pipeline import LOOSE, STRICT, committed_offsets, start_worker, wait_committed
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

CLOSED, OPEN = "fc-closed", "fc-open"
POLICY = {"default": STRICT, "tenants": {CLOSED: STRICT, OPEN: LOOSE}}
ASK_S, CHUNK_S = 3.0, 2.0  # the callers' timeouts in the failure rounds
SAFE = next(ex for ex in load_corpus("train") if ex.kind == "response" and ex.label == "Safe")
# the reply's first ten words as a model streams them (" word"): the text the fixture was trained on
DELTAS = [(" " if i else "") + w for i, w in enumerate(SAFE.messages[1]["content"].split()[:10])]


@dataclass
class Answers:
    """What one round of asking gave each tenant, and how long each answer took."""

    moderate: dict[str, tuple[Action, bool, float]]  # tenant → (action, timed out, seconds)
    stream: dict[str, tuple[bool, str | None, float | None, Action, bool, float]]  # stopped, why, when, final...


async def ask(guard: Guard, round_name: str, ask_s: float = ASK_S, chunk_s: float = CHUNK_S) -> Answers:
    async def moderate(tenant: str):
        began = time.monotonic()
        outcome = await guard.moderate(conversation(f"{round_name}-{tenant}", tenant, SAFE.messages[0]["content"]),
                                       timeout=ask_s)
        return outcome.action, outcome.timed_out, time.monotonic() - began

    async def stream(tenant: str):
        async with guard.stream(f"{round_name}-{tenant}-s", SAFE.messages[0]["content"], tenant=tenant,
                                chunk_timeout=chunk_s) as s:
            began = time.monotonic()
            for delta in DELTAS:  # a gateway relaying a reply at 10 deltas/s
                if s.stopped.is_set():
                    break
                await s.push(delta)
                await asyncio.sleep(0.1)
            pushed, waited = s._seq, time.monotonic()  # then each chunk's verdict, or the stop
            while not s.stopped.is_set() and len(s.verdict_at) < pushed and time.monotonic() - waited < chunk_s + 0.5:
                await asyncio.sleep(0.05)
            stopped_after = s.stopped_at - began if s.stopped_at is not None else None
            finished = time.monotonic()
            outcome = await s.finish(timeout=ask_s)
            return (s.stopped.is_set(), s.stop_reason, stopped_after, outcome.action, outcome.timed_out,
                    time.monotonic() - finished)

    tenants = (CLOSED, OPEN)
    answers = await asyncio.gather(*(moderate(t) for t in tenants), *(stream(t) for t in tenants))
    return Answers(dict(zip(tenants, answers[:2])), dict(zip(tenants, answers[2:])))


def assert_fail_modes(answers: Answers, round_name: str) -> None:
    """Closed: block, and its stream stopped within its chunk deadline; open: allow, never stopped;
    every answer within its timeout + 1 s."""
    for tenant, action in ((CLOSED, Action.block), (OPEN, Action.allow)):
        got, _, took = answers.moderate[tenant]
        assert got is action and took <= ASK_S + 1, (round_name, tenant, answers.moderate[tenant])
        stopped, why, after, final, _, final_took = answers.stream[tenant]
        assert final is action and final_took <= ASK_S + 1, (round_name, tenant, answers.stream[tenant])
        if tenant == CLOSED:  # the last delta went at ~1 s; its deadline is CHUNK_S after it
            assert stopped and after is not None and after <= len(DELTAS) * 0.1 + CHUNK_S + 1, (round_name, why, after)
        else:
            assert not stopped, (round_name, why)


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def until(condition, timeout_s: float, what: str) -> float:
    """How long `eventually` waited for `condition`, in a thread: the Guard's reader keeps running."""
    began = time.monotonic()
    await asyncio.to_thread(eventually, condition, timeout_s, what)
    return time.monotonic() - began


async def audit_outage_holds_back_no_agent(settings: Settings, bootstrap: str) -> None:
    made = [VerdictEvent(verdict_id=f"fc-audit-{i}", source_event_id=f"e{i}", conversation_id=f"c{i}", tenant=CLOSED,
                         moderate=Moderate.prompt, model_id="m", model_variant="gen", risk_level=RiskLevel.safe,
                         action=Action.allow, policy="p", latency_ms=1).model_dump_json() for i in range(6000)]
    await produce_lines(settings, bootstrap, "verdicts", made)  # more than an agent's stream buffer (4,096)
    await wait_committed(settings, bootstrap, "verdicts", settings.kafka.group_id, timeout_s=180)
    actions = 0
    async for message in records(settings, bootstrap, "actions", idle_timeout_s=2):
        actions += json.loads(message.value)["verdict_id"].startswith("fc-audit-")
    assert actions == 6000
    committed = await committed_offsets(bootstrap, settings.audit_group, topic_name(settings, "verdicts"),
                                        list(range(settings.kafka.topic_partitions)))
    assert all(offset <= 0 for offset in committed.values())  # the audit database never answered


def test_every_silence_ends_in_the_fail_mode_within_the_timeout(tiny, tmp_path):
    port = free_port()
    broker = KafkaCluster(directory=tmp_path / "kafka").start()
    worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "worker.log", app_id="gs-fc", topic_prefix="fc.",
                          policy=json.dumps(POLICY), metrics_port=port,
                          agents="gen,stream,enforcement,audit",
                          audit_url="postgresql://guard:pw@127.0.0.1:1/nowhere")
    settings = Settings.load({}, topic_prefix="fc.", app_id="gs-fc", policy=Policy.model_validate(POLICY))
    report = {}

    async def scenario():
        began = time.monotonic()
        async with Guard(broker.bootstrap, settings, timeout_s=ASK_S, chunk_timeout_s=CHUNK_S) as guard:
            healthy = await ask(guard, "healthy", ask_s=120, chunk_s=60)
            for tenant in (CLOSED, OPEN):  # real verdicts: safe content is allowed, nothing stopped
                assert healthy.moderate[tenant][:2] == (Action.allow, False), healthy
                assert healthy.stream[tenant][0] is False and healthy.stream[tenant][3:5] == (Action.allow, False), healthy
            report["healthy round at"] = time.monotonic() - began
            await audit_outage_holds_back_no_agent(settings, broker.bootstrap)
            report["audit outage checked at"] = time.monotonic() - began

            # the verdict reader crashes (its consumer fails): every waiter gets the fail mode at once
            async def broken(*_, **__):
                raise ConnectionResetError("the reader's connection broke")

            guard.verdicts.consumer.getmany = broken
            await asyncio.sleep(0.3)
            assert guard.readiness() == (False, "the verdict reader is down (restarting)")
            crashed = await ask(guard, "reader")
            assert_fail_modes(crashed, "reader crashed")
            report["reader down, then ready after"] = await until(lambda: guard.readiness()[0], 30, "the reader's restart")
            again = await ask(guard, "reader-back", ask_s=120, chunk_s=60)
            assert again.moderate[CLOSED][:2] == (Action.allow, False), again

            # the model pool stops answering (its actors frozen)
            frozen = worker.actor_pids("GenGuard") + worker.actor_pids("StreamGuard")
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            try:
                assert_fail_modes(await ask(guard, "pool"), "pool frozen")
                report["worker not ready after"] = await until(lambda: probe(port, "readyz") == 503, 60, "readyz 503")
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
            report["worker ready again after"] = await until(lambda: probe(port, "readyz") == 200, 60, "readyz 200")

            report["pool round done at"] = time.monotonic() - began
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait()
            assert_fail_modes(await ask(guard, "worker"), "worker SIGKILLed")

            broker.stop()
            assert_fail_modes(await ask(guard, "broker"), "broker killed")
            report["gateway not ready after"] = await until(lambda: not guard.readiness()[0], 30, "readiness false")
            report["all done at"] = time.monotonic() - began

    try:
        asyncio.run(scenario())
    finally:
        worker.stop()
        broker.stop()
        reap_leftovers(worker.settings.home, "gs-fc")
    print("fail-closed matrix: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.items()))
