"""The Faust app and its wiring: which agent reads which topic and writes where.

    conversations ──[gen]──────────► verdicts ──[enforcement]──► actions
    chunks ───────[stream]─────────►    │ ──[audit]────────► PostgreSQL / SQLite
         bad input ──────────────► dlq   │
                                         └──[analytics-dedupe]──► analytics-by-key ──[analytics-count]──► analytics

A worker runs the agents named in `settings.agents` (all by default), so the Gen and Stream paths
and the verdict sinks can be scaled as separate deployments on the same topics.

Every agent consumes micro-batches with `take_events`, which acks (and so lets Faust commit) an
event's offset only after the loop body has finished: each body awaits the delivery of what it
produced first. Values travel as raw bytes and are parsed by the pydantic wire models, so a bad
record becomes a dead letter instead of crashing the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust

from guardstream.schemas import DeadLetter, VerdictEvent
from guardstream.topology.settings import Settings
from guardstream.topology.topics import topics_for
from guardstream.workers import metrics
from guardstream.workers.analytics import count_keys, key_window, window_count
from guardstream.workers.audit import open_audit_store
from guardstream.workers.enforcement import action_for
from guardstream.workers.gen_moderation import GenModerator
from guardstream.workers.intake import RawRecord, decode
from guardstream.workers.stream_moderation import StreamModerator, StreamState

log = logging.getLogger(__name__)
VERDICT_BATCH = 256


def _credentials(settings: Settings):
    options = settings.kafka_client_options()
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=options.get("ssl_context"))
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def _record(event) -> RawRecord:
    m = event.message
    return RawRecord(m.topic, m.partition, m.offset, m.key, m.value)


def create_app(settings: Settings, bootstrap: str, moderator: GenModerator | None,
               stream_moderator: StreamModerator | None) -> faust.App:
    """The agents named in `settings.agents`; the moderators of agents left out may be None."""
    topics = topics_for(settings)
    partitions = settings.topic_partitions
    app = faust.App(
        settings.app_id, broker=f"kafka://{bootstrap}", broker_credentials=_credentials(settings), store="memory://",
        topic_partitions=partitions, topic_replication_factor=settings.topic_replication, web_enabled=False,
        consumer_auto_offset_reset="earliest", producer_acks=-1, topic_allow_declare=True,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s, broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=1, producer_max_batch_size=1_048_576,
    )

    def raw_topic(name: str, **kw) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=partitions, **kw)

    conversations, verdicts = raw_topic(topics.conversations.name), raw_topic(topics.verdicts.name)
    actions, dlq, analytics = raw_topic(topics.actions.name), raw_topic(topics.dlq.name), raw_topic(topics.analytics.name)
    by_count_key = raw_topic(topics.analytics_by_key.name, internal=True)
    chunks = raw_topic(topics.chunks.name)
    stream_states = app.Table("stream-state", key_type=str, partitions=partitions)  # values: JSON (the default)
    seen = app.Table("analytics-seen", default=int, partitions=partitions)
    counts = app.Table("analytics-counts", default=int, partitions=partitions)

    async def deliver(sends: list[tuple[faust.TopicT, str | None, bytes]]) -> None:
        """Send and wait for every ack. Straight to the app's producer: Faust's Topic.send took 10 to
        30 times as long per record and held a Gen-only worker to about 750 verdicts/s."""
        pending = [await app.producer.send(topic.get_topic_name(), key.encode() if key is not None else None, value,
                                           None, None, None) for topic, key, value in sends]
        await asyncio.gather(*pending)

    def dead(letter: DeadLetter) -> tuple[faust.TopicT, str | None, bytes]:
        metrics.DEAD_LETTERS.labels(letter.topic, letter.error_code).inc()
        log.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.error)
        return dlq, letter.key, letter.model_dump_json().encode()

    def read_verdicts(events) -> tuple[list[VerdictEvent], list[DeadLetter]]:
        decoded = [decode(_record(e), VerdictEvent, settings.max_event_bytes) for e in events]
        return [d for d in decoded if isinstance(d, VerdictEvent)], [d for d in decoded if isinstance(d, DeadLetter)]

    if "gen" in settings.agents:
        @app.agent(conversations, name="gen")
        async def gen(stream):
            batch, wait_s = settings.gen_batch_size * settings.gen_actors, settings.gen_batch_wait_ms / 1000
            async for events in stream.take_events(batch, wait_s):
                began = time.perf_counter()
                produced, letters = await moderator.moderate([_record(e) for e in events])
                await deliver([(verdicts, v.conversation_id, v.model_dump_json().encode()) for v in produced]
                              + [dead(d) for d in letters])
                metrics.GEN_BATCH_SECONDS.observe(time.perf_counter() - began)

    if "stream" in settings.agents:
        # Stream sessions live in `stream_states` (conversation id → stream id → StreamState), so a
        # worker that takes over a partition can rebuild them. A micro-batch has no "current event" for
        # Faust to pick the changelog partition from, so the state is written to the store and to the
        # changelog partition of the chunk it came from explicitly; `waiting` remembers conversations
        # with chunks held behind a gap, which a timer re-checks; `stream_lock` keeps the two apart.
        waiting: dict[str, int] = {}
        stream_lock = asyncio.Lock()

        def load_streams(conversation_id: str) -> dict[str, StreamState]:
            return {sid: StreamState.model_validate(v) for sid, v in (stream_states.get(conversation_id) or {}).items()}

        async def judge_chunks(records: list[RawRecord]) -> None:
            async with stream_lock:
                states = {c: load_streams(c) for c in waiting}
                produced, letters, partition_of = await stream_moderator.moderate(records, states, load_streams)
                await deliver([(verdicts, v.conversation_id, v.model_dump_json().encode()) for v in produced]
                              + [dead(d) for d in letters])
                for conversation_id in partition_of:  # after delivery: a crash in between replays, never skips
                    value = {sid: st.model_dump(mode="json") for sid, st in states[conversation_id].items()}
                    stream_states.data[conversation_id] = value
                    stream_states.send_changelog(partition_of[conversation_id], conversation_id, value)
                    if any(st.held for st in states[conversation_id].values()):
                        waiting[conversation_id] = partition_of[conversation_id]
                    else:
                        waiting.pop(conversation_id, None)

        @app.agent(chunks, name="stream")
        async def stream_agent(stream):
            async for events in stream.take_events(settings.stream_batch_size, settings.stream_batch_wait_ms / 1000):
                await judge_chunks([_record(e) for e in events])

        @app.timer(interval=1.0)
        async def release_gaps():
            """Chunks held behind a gap are released (and the gap reported) once the wait is over."""
            if waiting:
                await judge_chunks([])

    if "enforcement" in settings.agents:
        @app.agent(verdicts, name="enforcement")
        async def enforcement(stream):
            async for events in stream.take_events(VERDICT_BATCH, 0.05):
                found, letters = read_verdicts(events)
                sends = []
                for verdict in found:
                    action = action_for(verdict)
                    metrics.ACTIONS.labels(action.tenant, action.action.value).inc()
                    sends.append((actions, action.conversation_id, action.model_dump_json().encode()))
                await deliver(sends + [dead(d) for d in letters])  # the one agent that reports bad verdict records

    if "audit" in settings.agents:
        @app.agent(verdicts, name="audit")
        async def audit(stream):
            store = open_audit_store(settings.audit_target())
            try:
                async for events in stream.take_events(VERDICT_BATCH, 0.2):
                    found, _ = read_verdicts(events)  # enforcement already dead-letters bad verdict records
                    if found:
                        await store.upsert_reliably(found)
            finally:
                await store.close()

    if "analytics" in settings.agents:
        # The analytics agents own tables, which Faust only lets a stream write per event; their
        # sends are buffered, and Faust flushes the producer before it commits their offsets.
        @app.agent(verdicts, name="analytics-dedupe")
        async def analytics_dedupe(stream):
            async for event in stream.events():
                verdict = decode(_record(event), VerdictEvent, settings.max_event_bytes)
                if not isinstance(verdict, VerdictEvent) or seen.get(verdict.verdict_id):
                    continue
                keys = count_keys(verdict, settings.analytics_window_s)
                for key in keys:
                    await by_count_key.send(key=key.encode(), value=b"1")
                seen[verdict.verdict_id] = key_window(keys[0])

        @app.agent(by_count_key, name="analytics-count")
        async def analytics_count(stream):
            async for event in stream.events():
                key = event.message.key.decode()
                counts[key] += 1
                update = window_count(key, counts[key], settings.analytics_window_s)
                metrics.VERDICTS.labels(update.tenant, update.risk_level.value, update.category).inc()
                await analytics.send(key=key.encode(), value=update.model_dump_json().encode())

        @app.timer(interval=settings.analytics_window_s)
        async def expire_analytics():
            """Forget windows older than the retention; a verdict replayed after that counts again."""
            horizon = time.time() - settings.analytics_retention_s
            for table, window_of in ((seen, lambda k, v: v), (counts, lambda k, v: key_window(k))):
                for key in [k for k, v in list(table.items()) if window_of(k, v) < horizon]:
                    del table[key]

    return app
