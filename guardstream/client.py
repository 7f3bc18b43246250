"""guardstream for gateways: moderate a conversation, or guard a reply while it streams, over Kafka.

    async with Guard(bootstrap, settings) as guard:
        outcome = await guard.moderate(event, timeout=2)          # the verdict, or the fail mode
        async with guard.stream("c-1", "how do I ...", tenant="acme") as s:
            for delta in reply:
                if s.stopped.is_set():
                    break                                           # cut the reply at s.stop_token
                await s.push(delta)                                 # text deltas or Qwen3 token ids
            outcome = await s.finish()                              # the whole reply's verdict

One Guard per process: one producer, and one verdict reader (`verdict_reader.py`) that serves
every request in flight. Each Guard has a partition of the `replies` topic to itself, claimed in
the group `<prefix>gateways` unless `reply_partition` fixes one: every request names it and
carries a random nonce, the workers send its verdicts there, and only a verdict that echoes the
nonce answers it, so a gateway's reading stays the same however many gateways there are. Its
settings (`GatewaySettings`: Kafka, the starting policy for the fail modes) are a part of the
worker's, and the module loads nothing of the worker.

Nothing a caller awaits raises, and every silence ends in the tenant's fail mode within the
caller's timeout: a Kafka error, a verdict that does not come, a reader that died (it is
restarted, and while it is down every waiter gets the fail mode at once), a stream chunk without
a verdict within `chunk_timeout_s` (a fail-closed tenant's stream is stopped). One tenant holds at
most `tenant_share` of the in-flight slots, so it cannot push the others into their fail modes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from guardstream.callers import InFlight
from guardstream.schemas import (Action, ConversationEvent, Message, Moderate, RiskLevel, Role, TokenChunkEvent,
                                 VerdictEvent)
from guardstream.wire import metrics
from guardstream.wire.errors import authorized, describe
from guardstream.wire.policy import PoliciesInForce
from guardstream.wire.policy_feed import PolicyFeed
from guardstream.wire.settings import GatewaySettings
from guardstream.wire.topics import topics_for
from guardstream.verdict_reader import STOP_WAIT_S, Key, ReaderDown, VerdictReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """A verdict and what to do, or, when none came in time, the action the tenant's fail mode gives
    and why (`timeout`, `reader_down`, or the error). Observe mode: the action is allow, and
    `would_action` what enforcement would have done (the verdict's, or the fail mode's)."""

    action: Action
    verdict: VerdictEvent | None = None
    reason: str | None = None
    would_action: Action | None = None

    @classmethod
    def of(cls, verdict: VerdictEvent) -> Outcome:
        return cls(verdict.action, verdict, would_action=verdict.would_action)

    @property
    def timed_out(self) -> bool:
        return self.verdict is None


class Slots:
    """In-flight slots: `total` in all, at most `per_tenant` of them held by any one tenant."""

    def __init__(self, total: int, tenant_share: float):
        self.total = asyncio.Semaphore(total)
        self.per_tenant = max(1, int(total * tenant_share))
        self._tenants: dict[str, asyncio.Semaphore] = {}
        # callers holding or waiting for each tenant's slots; an idle tenant's semaphore is forgotten
        self._users = InFlight(on_idle=self._tenants.pop)

    async def run(self, tenant: str, work: Callable[[], Awaitable]):
        """`work()` once a slot is held: a caller that gives up while waiting never starts it."""
        with self._users.held(tenant):
            mine = self._tenants.setdefault(tenant, asyncio.Semaphore(self.per_tenant))
            async with mine, self.total:
                return await work()


class Guard:
    def __init__(self, bootstrap: str, settings: GatewaySettings | None = None, timeout_s: float = 5.0, max_inflight: int = 4096,
                 tenant_share: float = 0.25, chunk_timeout_s: float = 2.0, reply_partition: int | None = None):
        self.settings = settings or GatewaySettings.load()
        self.timeout_s, self.chunk_timeout_s = timeout_s, chunk_timeout_s
        self.verdicts = VerdictReader(bootstrap, self.settings.kafka, reply_partition)
        self._bootstrap = bootstrap
        self._topics = topics_for(self.settings.kafka)
        self._slots = Slots(max_inflight, tenant_share)
        self._producer: AIOKafkaProducer | None = None
        # the tenants' fail modes follow the policies topic
        self._policies = PolicyFeed(self.settings.kafka, bootstrap, self.settings.policy, self.settings.policy_max_stale_s)
        self._following: asyncio.Task | None = None

    @property
    def policies(self) -> PoliciesInForce:
        """The policies in force as this gateway follows them: their fail modes answer a silence."""
        return self._policies.policies

    @property
    def reply_partition(self) -> int | None:
        """The replies topic's partition this gateway reads its verdicts from (once started)."""
        return self.verdicts.partition

    @property
    def read(self):
        """What the verdict reader fetched: records, bytes, decoded, and foreign verdicts skipped."""
        return self.verdicts.read

    async def __aenter__(self) -> Guard:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        """Read the policies topic, connect, claim a reply partition, and return once the reader is
        at its end (so no verdict is missed). A start that fails leaves nothing running."""
        await self._policies.catch_up()
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=0,
                                          **self.settings.kafka.client_options())
        await self._producer.start()
        try:
            await self.verdicts.start()
        except BaseException:
            await self.stop()
            raise
        # the last task: a start that failed above leaves none running (follow resumes where catch_up ended)
        self._following = asyncio.create_task(self._policies.follow(), name="guardstream-client-policies")

    async def stop(self) -> None:
        if self._following is not None:
            self._following.cancel()
            if (await asyncio.wait([self._following], timeout=STOP_WAIT_S))[1]:  # never wait on a gone broker for ever
                log.warning("stopping the client: its policies reader did not end within %ds; left behind", STOP_WAIT_S)
        await self.verdicts.stop()
        if self._producer is not None:  # a broker that is gone must not make stopping fail or hang
            [failed] = await asyncio.gather(asyncio.wait_for(self._producer.stop(), STOP_WAIT_S), return_exceptions=True)
            if failed is not None:
                log.warning("stopping the Kafka producer: %s", describe(failed))

    def readiness(self) -> tuple[bool, str]:
        """Whether verdicts can arrive (the reader runs and the broker answered it lately), and the
        fail modes are the current policies' (the policies reader is at the topic's end)."""
        reading, state = self.verdicts.readiness()
        if not reading:
            return False, state
        policies_ok, policies_state = self._policies.readiness()
        if not policies_ok:
            return False, policies_state
        return True, state

    async def moderate(self, event: ConversationEvent, timeout: float | None = None) -> Outcome:
        """Moderate one prompt or finished reply: its verdict, or the tenant's fail mode after `timeout`
        (or at once when no verdict can come); never raises."""
        key, nonce = (event.tenant, event.conversation_id, event.event_id), secrets.token_hex(16)
        event = event.model_copy(update={"nonce": nonce})
        with self.verdicts.expect(key, nonce) as waiting:
            try:
                if not self.verdicts.reading:
                    return self.fail_mode(event.tenant, "reader_down")
                async with asyncio.timeout(self.timeout_s if timeout is None else timeout):
                    verdict = await self._slots.run(event.tenant, lambda: self._send_and_wait(event, waiting))
            except TimeoutError:
                return self.fail_mode(event.tenant, "timeout")
            except ReaderDown:
                return self.fail_mode(event.tenant, "reader_down")
            except Exception as exc:  # noqa: BLE001 - the caller gets the fail mode, never an exception
                log.warning("moderating %s failed (%s): the fail mode answers", event.event_id, describe(exc))
                return self.fail_mode(event.tenant, f"error: {describe(exc)}")
        return Outcome.of(verdict)

    async def _send_and_wait(self, event: ConversationEvent, waiting: asyncio.Future) -> VerdictEvent:
        await self._send(self._topics.conversations.name, event)
        return await asyncio.shield(waiting)

    def stream(self, conversation_id: str, prompt: str, *, tenant: str, stream_id: str | None = None,
               timeout: float | None = None, chunk_timeout: float | None = None,
               language: str | None = None) -> GuardedStream:
        """Guard one reply while it is generated (use it with `async with`); `language` (BCP 47), when
        the caller knows it, saves the worker telling it from the prompt."""
        return GuardedStream(self, conversation_id, stream_id or uuid.uuid4().hex, tenant, prompt,
                             self.timeout_s if timeout is None else timeout,
                             self.chunk_timeout_s if chunk_timeout is None else chunk_timeout, language=language)

    async def send_chunk(self, chunk: TokenChunkEvent) -> None:
        """One chunk of a guarded reply, sent once its tenant has an in-flight slot."""
        await self._slots.run(chunk.tenant, lambda: self._send(self._topics.chunks.name, chunk))

    def is_fail_closed(self, tenant: str) -> bool:
        return self.policies.for_tenant(tenant).fail_mode == "closed"

    def fail_mode(self, tenant: str, reason: str = "timeout") -> Outcome:
        """A silence is decided as the worker decides an `Error` verdict: the fail mode, observed
        (allowed, `would_action` recorded) when the tenant is in observe mode."""
        decision = self.policies.for_tenant(tenant).decide(RiskLevel.error, [])
        metrics.FAIL_MODES.labels(self.policies.metric_tenant(tenant), decision.action.value,
                                  reason.split(":")[0]).inc()
        return Outcome(decision.action, reason=reason, would_action=decision.would_action)

    async def _send(self, topic: str, event: ConversationEvent | TokenChunkEvent) -> None:
        event = event.model_copy(update={"reply_to": self.reply_partition})
        with authorized("Write", f"topic {topic}"):  # a refusal is named, and the caller's fail mode answers
            await (await self._producer.send(topic, event.model_dump_json().encode(), key=event.conversation_id.encode()))


@dataclass
class GuardedStream:
    """One reply being guarded: push its pieces; `stopped` is set when the guard says cut it:
    the model's stop (`stop_reason` "model", at `stop_token`), or, for a fail-closed tenant, a
    chunk with no verdict within `chunk_timeout_s` ("timeout"), a chunk that could not be sent
    ("error: ..."), or the verdict reader going down ("reader_down")."""

    guard: Guard
    conversation_id: str
    stream_id: str
    tenant: str
    prompt: str
    timeout_s: float
    chunk_timeout_s: float = 2.0
    language: str | None = None  # the stream's, on its first chunk
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))  # on every chunk; its verdicts echo it
    stop_token: int | None = None
    stop_reason: str | None = None
    would_stop_reason: str | None = None  # observe mode: the silence for which a fail-closed stream would have stopped
    stopped_at: float | None = None  # time.monotonic() when the stop arrived
    prompt_verdict: VerdictEvent | None = None
    chunk_verdicts: list[VerdictEvent] = field(default_factory=list)
    verdict_at: dict[int, float] = field(default_factory=dict)  # chunk seq → time.monotonic() its verdict arrived
    _seq: int = 0
    _judged_to: int = -1  # the highest chunk seq with a verdict
    _as_ids: bool = False
    _gave_up: bool = False  # counted once in the fail-mode metric
    _unsent: bool = False  # a piece could not be sent: the stream is the fail mode's from there on
    _final: asyncio.Future | None = None
    _deadlines: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return self.tenant, self.conversation_id, self.stream_id

    async def __aenter__(self) -> GuardedStream:
        self._final = asyncio.get_running_loop().create_future()
        self.guard.verdicts.follow(self)
        return self

    async def __aexit__(self, *exc) -> None:
        self.guard.verdicts.unfollow(self)
        for handle in self._deadlines:
            handle.cancel()

    async def push(self, piece: str | list[int], final: bool = False, timeout: float | None = None) -> bool:
        """Send the next piece of the reply: a text delta, or Qwen3 token ids. Never raises: whether it
        was sent within `timeout` (default: the chunk timeout). Once one piece could not be sent, the
        stream is the fail mode's, and later pieces are not sent (they could not be judged whole)."""
        if not self.guard.verdicts.reading:
            self.give_up("reader_down")
        if self._unsent:
            return False
        self._as_ids = not isinstance(piece, str)
        payload = {"token_ids": list(piece)} if self._as_ids else {"text_delta": piece}
        seq = self._seq
        self._seq += 1
        try:
            chunk = TokenChunkEvent(event_id=f"{self.stream_id}-{seq}", conversation_id=self.conversation_id,
                                    stream_id=self.stream_id, tenant=self.tenant, seq=seq, final=final, nonce=self.nonce,
                                    prompt=self.prompt if seq == 0 else None,
                                    language=self.language if seq == 0 else None, **payload)
            async with asyncio.timeout(self.chunk_timeout_s if timeout is None else timeout):
                await self.guard.send_chunk(chunk)
        except TimeoutError:
            self._unsent = True
            self.give_up("timeout")
            return False
        except Exception as exc:  # noqa: BLE001 - the fail mode decides, the caller never sees it
            log.warning("stream %s: chunk %d not sent (%s)", self.stream_id, seq, describe(exc))
            self._unsent = True
            self.give_up(f"error: {describe(exc)}")
            return False
        if not final:
            loop = asyncio.get_running_loop()
            self._deadlines.append(loop.call_later(self.chunk_timeout_s, self._check_deadline, seq))
        return True

    async def finish(self, last: str | list[int] | None = None, timeout: float | None = None) -> Outcome:
        """End the reply (with `last` as its final piece) and wait for the whole reply's verdict, or
        the tenant's fail mode: at once when the end cannot be sent, else after `timeout` in all."""
        limit = self.timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        if not await self.push(([] if self._as_ids else "") if last is None else last, final=True, timeout=limit):
            return self.guard.fail_mode(self.tenant, self.stop_reason or "timeout")
        try:
            verdict = await asyncio.wait_for(asyncio.shield(self._final), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return self.guard.fail_mode(self.tenant, "timeout")
        except ReaderDown:
            return self.guard.fail_mode(self.tenant, "reader_down")
        return Outcome.of(verdict)

    def _check_deadline(self, seq: int) -> None:
        self._deadlines = [h for h in self._deadlines if not h.cancelled() and h.when() > asyncio.get_running_loop().time()]
        if self._judged_to < seq:
            self.give_up("timeout")

    def give_up(self, reason: str) -> None:
        """No verdict can be had in time: a fail-closed tenant's stream is stopped, a fail-open one goes
        on (observe mode: goes on, `would_stop_reason` says why it would have stopped); each is
        counted once."""
        if reason == "reader_down" and not self._final.done():
            self._final.set_exception(ReaderDown())
            self._final.exception()  # retrieved: finish() may never be called
        if self.stopped.is_set() or self._gave_up:
            return
        self._gave_up = True
        outcome = self.guard.fail_mode(self.tenant, reason)
        if outcome.would_action is Action.block:
            self.would_stop_reason = reason
        if outcome.action is Action.block:
            log.warning("stream %s of %s stopped: %s", self.stream_id, self.tenant, reason)
            self.stop_reason, self.stopped_at = reason, time.monotonic()
            self.stopped.set()

    def receive(self, verdict: VerdictEvent) -> None:
        """A verdict of this stream (the reader checked its nonce)."""
        if verdict.moderate is Moderate.prompt:
            self.prompt_verdict = verdict
        elif verdict.stream.final:
            if not self._final.done():
                self._final.set_result(verdict)
        else:
            self._chunk(verdict)

    def _chunk(self, verdict: VerdictEvent) -> None:
        self.chunk_verdicts.append(verdict)
        self._judged_to = max(self._judged_to, verdict.stream.seq)
        self.verdict_at.setdefault(verdict.stream.seq, time.monotonic())
        if verdict.action is Action.stop and not self.stopped.is_set():
            self.stop_token, self.stopped_at = verdict.stream.stop_token, self.verdict_at[verdict.stream.seq]
            self.stop_reason = "model"
            self.stopped.set()


def conversation(conversation_id: str, tenant: str, user: str, reply: str | None = None,
                 event_id: str | None = None, language: str | None = None) -> ConversationEvent:
    """A prompt (or, with `reply`, a finished reply) to moderate, in `language` when known."""
    messages = [Message(role=Role.user, content=user)] + ([Message(role=Role.assistant, content=reply)] if reply else [])
    return ConversationEvent(event_id=event_id or uuid.uuid4().hex, conversation_id=conversation_id, tenant=tenant,
                             moderate=Moderate.response if reply else Moderate.prompt, messages=messages,
                             language=language)
