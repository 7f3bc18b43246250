"""guardstream for gateways: moderate a conversation, or guard a reply while it streams, over Kafka.

    async with Guard(bootstrap, settings) as guard:
        outcome = await guard.moderate(event, timeout=2)          # the verdict, or the fail mode
        async with guard.stream("c-1", "how do I ...", tenant="acme") as s:
            for delta in reply:
                if s.stopped.is_set():
                    break                                           # cut the reply at s.stop_token
                await s.push(delta)                                 # text deltas or Qwen3 token ids
            outcome = await s.finish()                              # the whole reply's verdict

One Guard per process: one producer, and one reader of the verdict topic that serves every request
in flight. The reader joins no consumer group: it is assigned every partition at its end before
the first request is sent, so each gateway process sees every verdict and picks out its own.
Settings (topic prefix, security, tenant policies for the fail mode) are the worker's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from guardstream.schemas import Action, ConversationEvent, Message, Moderate, Role, TokenChunkEvent, VerdictEvent
from guardstream.topology.settings import Settings
from guardstream.topology.topics import topics_for

log = logging.getLogger(__name__)
FETCH_WAIT_MS = 5  # aiokafka's default 500 ms long poll would be most of a stop's latency


@dataclass(frozen=True)
class Outcome:
    """A verdict and what to do, or, when none came in time, the action the tenant's fail mode gives."""

    action: Action
    verdict: VerdictEvent | None = None

    @property
    def timed_out(self) -> bool:
        return self.verdict is None


class Guard:
    def __init__(self, bootstrap: str, settings: Settings | None = None, timeout_s: float = 5.0, max_inflight: int = 4096):
        self.settings = settings or Settings.load()
        self.timeout_s = timeout_s
        self._bootstrap = bootstrap
        self._topics = topics_for(self.settings)
        self._slots = asyncio.Semaphore(max_inflight)  # bounded waiting: past this, callers wait (within their timeout)
        self._waiting: dict[tuple[str, str, str], asyncio.Future] = {}  # (tenant, conversation, event id) → verdict
        self._streams: dict[tuple[str, str, str], GuardedStream] = {}  # (tenant, conversation, stream id)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> Guard:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        options = self.settings.kafka_client_options()
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=0, **options)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
                                          fetch_max_wait_ms=FETCH_WAIT_MS, **options)
        await self._producer.start()
        await self._consumer.start()
        topic = self._topics.verdicts.name
        partitions = await self._partitions(topic)
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # the positions are settled before any request is sent, so no verdict is missed
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read(), name="guardstream-client-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for part in (self._consumer, self._producer):
            if part is not None:
                await part.stop()

    async def moderate(self, event: ConversationEvent, timeout: float | None = None) -> Outcome:
        """Moderate one prompt or finished reply: its verdict, or the tenant's fail mode after `timeout`."""
        key = (event.tenant, event.conversation_id, event.event_id)
        waiting = self._waiting.setdefault(key, asyncio.get_running_loop().create_future())
        try:
            async with asyncio.timeout(self.timeout_s if timeout is None else timeout):
                async with self._slots:
                    await self._send(self._topics.conversations.name, event)
                    verdict = await asyncio.shield(waiting)
        except TimeoutError:
            return self.fail_mode(event.tenant)
        finally:
            if self._waiting.get(key) is waiting:
                del self._waiting[key]
        return Outcome(verdict.action, verdict)

    def stream(self, conversation_id: str, prompt: str, *, tenant: str, stream_id: str | None = None,
               timeout: float | None = None) -> GuardedStream:
        """Guard one reply while it is generated (use it with `async with`)."""
        return GuardedStream(self, conversation_id, stream_id or uuid.uuid4().hex, tenant, prompt,
                             self.timeout_s if timeout is None else timeout)

    def fail_mode(self, tenant: str) -> Outcome:
        closed = self.settings.policy.for_tenant(tenant).fail_mode == "closed"
        return Outcome(Action.block if closed else Action.allow)

    async def _send(self, topic: str, event: ConversationEvent | TokenChunkEvent) -> None:
        await (await self._producer.send(topic, event.model_dump_json().encode(), key=event.conversation_id.encode()))

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        for _ in range(100):
            if found := self._consumer.partitions_for_topic(topic):
                return [TopicPartition(topic, p) for p in sorted(found)]
            await self._consumer.topics()  # refreshes the metadata
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the verdict topic {topic} does not exist: start a guardstream worker (it creates the "
                           f"topics) or check GUARDSTREAM_TOPIC_PREFIX")

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for record in itertools.chain.from_iterable(batches.values()):
                try:
                    verdict = VerdictEvent.model_validate_json(record.value)
                except ValidationError:
                    log.warning("skipped a record on the verdict topic that is no verdict (offset %d)", record.offset)
                    continue
                self._deliver(verdict)

    def _deliver(self, verdict: VerdictEvent) -> None:
        if verdict.stream is not None:
            guarded = self._streams.get((verdict.tenant, verdict.conversation_id, verdict.stream.stream_id))
            if guarded is not None:
                guarded._receive(verdict)
            return
        waiting = self._waiting.get((verdict.tenant, verdict.conversation_id, verdict.source_event_id))
        if waiting is not None and not waiting.done():
            waiting.set_result(verdict)


@dataclass
class GuardedStream:
    """One reply being guarded: push its pieces; `stopped` is set when the guard says cut it."""

    guard: Guard
    conversation_id: str
    stream_id: str
    tenant: str
    prompt: str
    timeout_s: float
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    stop_token: int | None = None
    stopped_at: float | None = None  # time.monotonic() when the stop arrived
    prompt_verdict: VerdictEvent | None = None
    chunk_verdicts: list[VerdictEvent] = field(default_factory=list)
    verdict_at: dict[int, float] = field(default_factory=dict)  # chunk seq → time.monotonic() its verdict arrived
    _seq: int = 0
    _as_ids: bool = False
    _final: asyncio.Future | None = None

    async def __aenter__(self) -> GuardedStream:
        key = (self.tenant, self.conversation_id, self.stream_id)
        if key in self.guard._streams:
            raise ValueError(f"stream {self.stream_id} of conversation {self.conversation_id} is already being guarded")
        self._final = asyncio.get_running_loop().create_future()
        self.guard._streams[key] = self
        return self

    async def __aexit__(self, *exc) -> None:
        self.guard._streams.pop((self.tenant, self.conversation_id, self.stream_id), None)

    async def push(self, piece: str | list[int], final: bool = False) -> None:
        """Send the next piece of the reply: a text delta, or Qwen3 token ids."""
        self._as_ids = not isinstance(piece, str)
        payload = {"token_ids": list(piece)} if self._as_ids else {"text_delta": piece}
        chunk = TokenChunkEvent(event_id=f"{self.stream_id}-{self._seq}", conversation_id=self.conversation_id,
                                stream_id=self.stream_id, tenant=self.tenant, seq=self._seq, final=final,
                                prompt=self.prompt if self._seq == 0 else None, **payload)
        await self.guard._send(self.guard._topics.chunks.name, chunk)
        self._seq += 1

    async def finish(self, last: str | list[int] | None = None, timeout: float | None = None) -> Outcome:
        """End the reply (with `last` as its final piece) and wait for the whole reply's verdict,
        or the tenant's fail mode after `timeout`."""
        await self.push(([] if self._as_ids else "") if last is None else last, final=True)
        try:
            verdict = await asyncio.wait_for(asyncio.shield(self._final), self.timeout_s if timeout is None else timeout)
        except TimeoutError:
            return self.guard.fail_mode(self.tenant)
        return Outcome(verdict.action, verdict)

    def _receive(self, verdict: VerdictEvent) -> None:
        if verdict.moderate is Moderate.prompt:
            self.prompt_verdict = verdict
        elif verdict.stream.final:
            if not self._final.done():
                self._final.set_result(verdict)
        else:
            self._chunk(verdict)

    def _chunk(self, verdict: VerdictEvent) -> None:
        self.chunk_verdicts.append(verdict)
        self.verdict_at.setdefault(verdict.stream.seq, time.monotonic())
        if verdict.action is Action.stop and not self.stopped.is_set():
            self.stop_token, self.stopped_at = verdict.stream.stop_token, self.verdict_at[verdict.stream.seq]
            self.stopped.set()


def conversation(conversation_id: str, tenant: str, user: str, reply: str | None = None,
                 event_id: str | None = None) -> ConversationEvent:
    """A prompt (or, with `reply`, a finished reply) to moderate."""
    messages = [Message(role=Role.user, content=user)] + ([Message(role=Role.assistant, content=reply)] if reply else [])
    return ConversationEvent(event_id=event_id or uuid.uuid4().hex, conversation_id=conversation_id, tenant=tenant,
                             moderate=Moderate.response if reply else Moderate.prompt, messages=messages)
