"""The Faust app and its wiring: which agent reads which topic and writes where.

    conversations ──[gen]──────────► verdicts ──[enforcement]──► actions
    chunks ───────[stream]─────────►    │ ──[audit]────────► PostgreSQL / SQLite
         bad input ──────────────► dlq   │
                                         └──[analytics-route]──► analytics-by-key ──[analytics-count]──► analytics

A worker runs the agents named in `settings.agents` (all by default), so the Gen and Stream paths
and the verdict sinks can be scaled as separate deployments on the same topics.

Every agent reads micro-batches without Faust's automatic acks (`noack_take`) and acks a batch
only after `Outcomes.settle` has delivered an outcome for each of its records: a verdict, an
action, an audit row or a dead letter. An exception therefore never acknowledges a record, and
a record that fails alone is dead-lettered without its batch-mates. Values travel as raw bytes
and are parsed by the pydantic wire models. Timers never raise: an exception in a timer would
stop the whole app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import faust

from guardstream.schemas import DeadLetter, VerdictEvent
from guardstream.topology.consumer import StrictTransport
from guardstream.topology.outcomes import Outcomes, Step, Undeliverable, describe, is_transient
from guardstream.topology.settings import Settings
from guardstream.topology.state import PartitionedTable
from guardstream.topology.topics import topics_for
from guardstream.workers import faults, metrics
from guardstream.workers.analytics import StreamTime, count_keys, key_window, window_count
from guardstream.workers.audit import open_audit_store
from guardstream.workers.enforcement import action_for
from guardstream.workers.gen_moderation import GenModerator
from guardstream.workers.intake import RawRecord, decode
from guardstream.workers.stream_moderation import StreamModerator, StreamState, conversation_of

log = logging.getLogger(__name__)
VERDICT_BATCH = 256
Send = tuple[faust.TopicT, str | None, bytes]


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


def guarded(name: str, body: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A timer body that logs its failures instead of stopping the app; the next tick tries again."""

    async def run() -> None:
        try:
            await body()
        except Exception as exc:  # noqa: BLE001 - a timer that raises stops the whole Faust app
            (log.warning if is_transient(exc) else log.exception)("timer %s failed: %s; next tick tries again", name,
                                                                  describe(exc))

    run.__name__ = run.__qualname__ = name
    return run


async def pool_answers(pool, timeout_s: float = 10) -> bool:
    """Every actor answers (and reports its memory) within the timeout."""
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(actor.ready.remote() for actor in pool.actors)), timeout_s)
    except Exception:  # noqa: BLE001 - any failure to answer means not ready
        return False
    for index, answer in enumerate(answers):
        metrics.ACTOR_RSS.labels(type(pool).__name__, str(index)).set(answer["rss"])
    return True


def create_app(settings: Settings, bootstrap: str, moderator: GenModerator | None,
               stream_moderator: StreamModerator | None) -> faust.App:
    """The agents named in `settings.agents`; the moderators of agents left out may be None."""
    topics = topics_for(settings)
    partitions = settings.topic_partitions
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        settings.app_id, broker=f"kafka://{bootstrap}", broker_credentials=_credentials(settings), store="memory://",
        topic_partitions=partitions, topic_replication_factor=settings.topic_replication, web_enabled=False,
        consumer_auto_offset_reset="earliest", producer_acks=-1, topic_allow_declare=True,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s, broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=1, producer_max_batch_size=1_048_576,
        datadir=str(settings.home / "faust" / "{conf.name}-data"),  # not the working directory
    )
    app.transport = StrictTransport(app.conf.broker_consumer, app)  # commits only what agents acked

    def raw_topic(name: str, **kw) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=partitions, **kw)

    conversations, verdicts = raw_topic(topics.conversations.name), raw_topic(topics.verdicts.name)
    actions, dlq, analytics = raw_topic(topics.actions.name), raw_topic(topics.dlq.name), raw_topic(topics.analytics.name)
    by_count_key = raw_topic(topics.analytics_by_key.name, internal=True)
    chunks = raw_topic(topics.chunks.name)

    async def deliver(sends: list[Send]) -> None:
        """Send and wait for every ack. Straight to the app's producer: Faust's Topic.send took 10 to
        30 times as long per record and held a Gen-only worker to about 750 verdicts/s. A failure
        that retrying cannot mend is `Undeliverable`, which dead-letters the record it came from."""
        faults.hit("deliver")
        try:
            pending = [await app.producer.send(topic.get_topic_name(), key.encode() if key is not None else None, value,
                                               None, None, None) for topic, key, value in sends]
            await asyncio.gather(*pending)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise Undeliverable(describe(exc)) from exc

    def dead(letter: DeadLetter) -> Send:
        metrics.DEAD_LETTERS.labels(letter.topic, letter.error_code).inc()
        log.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.error)
        return dlq, letter.key, letter.model_dump_json().encode()

    async def send_letters(letters: list[DeadLetter]) -> None:
        await deliver([dead(d) for d in letters])

    def read_verdicts(records: list[RawRecord]) -> tuple[list[VerdictEvent], list[DeadLetter]]:
        decoded = [decode(r, VerdictEvent, settings.max_event_bytes) for r in records]
        return [d for d in decoded if isinstance(d, VerdictEvent)], [d for d in decoded if isinstance(d, DeadLetter)]

    tables: dict[str, PartitionedTable] = {}

    def restore_owned(table: PartitionedTable, source: faust.TopicT) -> None:
        """What a table holds for partitions of its source topic that this worker no longer owns is dropped."""
        table.keep_partitions({tp.partition for tp in app.assignor.assigned_actives()
                               if tp.topic == source.get_topic_name()})

    async def settled(name: str, stream, size: int, wait_s: float, step: Step) -> None:
        """The loop every agent runs: a batch, an outcome for each record, then (only then) the acks."""
        handler = Outcomes(name, send_letters)
        async for events in stream.noack_take(size, wait_s):
            await handler.settle([_record(e) for e in events], step)
            for event in events:
                await stream.ack(event)

    if "gen" in settings.agents:
        async def moderate_conversations(records: list[RawRecord]) -> None:
            began = time.perf_counter()
            produced, letters = await moderator.moderate(records)
            await deliver([(verdicts, v.conversation_id, v.model_dump_json().encode()) for v in produced]
                          + [dead(d) for d in letters])
            metrics.GEN_BATCH_SECONDS.observe(time.perf_counter() - began)

        @app.agent(conversations, name="gen")
        async def gen(stream):
            await settled("gen", stream, settings.gen_batch_size * settings.gen_actors, settings.gen_batch_wait_ms / 1000,
                          moderate_conversations)

    if "stream" in settings.agents:
        # Stream sessions live in `stream_states` (state_key(tenant, conversation) → stream id →
        # StreamState), so a worker that takes over a partition can rebuild them; each state is written after the
        # verdicts it led to were delivered (a crash in between replays, never skips). `waiting`
        # holds conversations with chunks held behind a gap, which a timer re-checks; `stream_lock`
        # keeps the agent and the timer apart.
        stream_states = tables["stream-state"] = PartitionedTable(app.Table("stream-state", key_type=str,
                                                                            partitions=partitions))
        waiting: dict[str, int] = {}
        stream_lock = asyncio.Lock()

        def load_streams(key: str) -> dict[str, StreamState]:
            return {sid: StreamState.model_validate(v) for sid, v in stream_states.get(key, {}).items()}

        async def judge_chunks(records: list[RawRecord], held_in: list[str] = ()) -> None:
            """Judge `records`, and release the chunks held in the conversations `held_in`."""
            async with stream_lock:
                states = {c: load_streams(c) for c in held_in}
                produced, letters, partition_of = await stream_moderator.moderate(records, states, load_streams)
                await deliver([(verdicts, v.conversation_id, v.model_dump_json().encode()) for v in produced]
                              + [dead(d) for d in letters])
                for key, partition in partition_of.items():
                    streams = states[key]
                    stream_states.put(partition, key, {sid: st.model_dump(mode="json") for sid, st in streams.items()})
                    if any(st.held for st in streams.values()):
                        waiting[key] = partition
                    else:
                        waiting.pop(key, None)

        @stream_states.table.on_recover
        async def find_held_chunks() -> None:
            """After each rebalance: streams with held chunks are found from the table (a restarted or
            new owner releases them too), and only for the partitions this worker owns."""
            restore_owned(stream_states, chunks)
            waiting.clear()
            waiting.update({key: partition for key, partition, streams in stream_states.items()
                            if any(StreamState.model_validate(st).held for st in streams.values())})

        @app.agent(chunks, name="stream")
        async def stream_agent(stream):
            await settled("stream", stream, settings.stream_batch_size, settings.stream_batch_wait_ms / 1000, judge_chunks)

        async def drop_held(key: str, failure: Exception) -> None:
            """Held chunks whose release failed for good become dead letters; the streams go on."""
            async with stream_lock:
                streams = load_streams(key)
                await send_letters([stream_moderator.held_letter(
                    conversation_of(key), held, "processing_failed",
                    f"stream {sid}: releasing chunk {seq} failed: {describe(failure)}")
                    for sid, state in streams.items() for seq, held in sorted(state.held.items())])
                for state in streams.values():
                    state.held.clear()
                    state.gap_since = None
                stream_states.put(waiting.pop(key), key,
                                  {sid: st.model_dump(mode="json") for sid, st in streams.items()})

        async def release_gaps() -> None:
            """Chunks held behind a gap are released (and the gap reported) once the wait is over,
            one conversation at a time, so one that fails does not hold back the others."""
            for key in list(waiting):
                try:
                    await judge_chunks([], [key])
                except Exception as exc:  # noqa: BLE001 - transient: the next tick retries; the others go on
                    if is_transient(exc):
                        log.warning("releasing held chunks of conversation %s failed (%s); retrying next tick",
                                    key, describe(exc))
                    else:
                        log.error("releasing held chunks of conversation %s failed (%s); dead-lettering them",
                                  key, describe(exc))
                        await drop_held(key, exc)

        app.timer(interval=1.0)(guarded("release_gaps", release_gaps))

        async def forget_streams() -> None:
            """Finished streams, and streams idle past stream_idle_ttl_s, leave the table (a conversation
            left with none is deleted with a tombstone); a chunk of one that comes later starts afresh."""
            horizon = time.time() - settings.stream_idle_ttl_s
            async with stream_lock:
                for key, partition, streams in stream_states.items():
                    keep = {sid: st for sid, st in streams.items() if st["held"] or st["updated_at"] >= horizon}
                    if not keep:
                        stream_states.delete(key)
                        waiting.pop(key, None)
                    elif len(keep) < len(streams):
                        stream_states.put(partition, key, keep)

        app.timer(interval=min(60.0, settings.stream_idle_ttl_s))(guarded("forget_streams", forget_streams))

    if "enforcement" in settings.agents:
        async def enforce(records: list[RawRecord]) -> None:
            found, letters = read_verdicts(records)
            sends = []
            for verdict in found:
                action = action_for(verdict)
                metrics.ACTIONS.labels(action.tenant, action.action.value).inc()
                sends.append((actions, action.conversation_id, action.model_dump_json().encode()))
            await deliver(sends + [dead(d) for d in letters])  # the one agent that reports bad verdict records

        @app.agent(verdicts, name="enforcement")
        async def enforcement(stream):
            await settled("enforcement", stream, VERDICT_BATCH, 0.05, enforce)

    if "audit" in settings.agents:
        store = open_audit_store(settings.audit_target())

        async def store_verdicts(records: list[RawRecord]) -> None:
            found, _ = read_verdicts(records)  # enforcement already dead-letters bad verdict records
            if found:
                await store.write(found)

        @app.agent(verdicts, name="audit")
        async def audit(stream):
            try:
                await settled("audit", stream, VERDICT_BATCH, 0.2, store_verdicts)
            finally:
                await store.close()

    if "analytics" in settings.agents:
        # Two stages, each co-partitioned with the table it keeps. `analytics-route` remembers each
        # verdict id it routed (`routed`), so a verdict produced again after a crash, even in a later
        # window, is not routed twice; it re-keys the rest by window|tenant|risk|category (value:
        # the verdict id). `analytics-count` keeps one entry per (count key, verdict id) in `counted`,
        # so a replay of either stage counts nothing twice, and derives `tally` (the counts) from
        # those entries, also after a restart. Both expire on stream time (`StreamTime`).
        window_s, retention_s = settings.analytics_window_s, settings.analytics_retention_s
        routed = tables["analytics-routed"] = PartitionedTable(app.Table("analytics-routed", key_type=str,
                                                                         partitions=partitions))
        counted = tables["analytics-counted"] = PartitionedTable(app.Table("analytics-counted", key_type=str,
                                                                           partitions=partitions))
        route_time, count_time = StreamTime(window_s, retention_s), StreamTime(window_s, retention_s)
        tally: Counter[str] = Counter()

        async def route(records: list[RawRecord]) -> None:
            fresh: dict[str, tuple[int, list[str]]] = {}  # verdict id → (partition, count keys)
            for record in records:
                verdict = decode(record, VerdictEvent, settings.max_event_bytes)
                if not isinstance(verdict, VerdictEvent):
                    continue  # enforcement already dead-letters bad verdict records
                keys = count_keys(verdict, window_s)
                route_time.advance(record.partition, key_window(keys[0]))
                if routed.get(verdict.verdict_id) is None and not route_time.expired(record.partition, key_window(keys[0])):
                    fresh.setdefault(verdict.verdict_id, (record.partition, keys))
            await deliver([(by_count_key, key, verdict_id.encode()) for verdict_id, (_, keys) in fresh.items()
                           for key in keys])
            for verdict_id, (partition, keys) in fresh.items():  # after delivery: a retry routes them again
                routed.put(partition, verdict_id, key_window(keys[0]))

        async def count(records: list[RawRecord]) -> None:
            touched = {}
            for record in records:
                key, verdict_id = record.key.decode(), record.value.decode()
                window = key_window(key)
                count_time.advance(record.partition, window)
                if count_time.expired(record.partition, window):
                    metrics.LATE_VERDICTS.labels(key.split("|", 2)[1]).inc()
                    continue
                entry = f"{key}|{verdict_id}"
                new = counted.get(entry) is None
                if new:
                    counted.put(record.partition, entry, window)
                    tally[key] += 1
                touched[key] = update = window_count(key, tally[key], window_s)
                if new:
                    metrics.VERDICTS.labels(update.tenant, update.risk_level.value, update.category).inc()
            # every key of the batch is published, so a retried batch republishes what it counted
            await deliver([(analytics, key, update.model_dump_json().encode()) for key, update in touched.items()])

        def restored(table: PartitionedTable, topic: faust.TopicT, clock: StreamTime) -> None:
            """After a rebalance's recovery: keep only owned partitions, and resume stream time from the data."""
            restore_owned(table, topic)
            for _, partition, window in table.items():
                clock.advance(partition, window)

        @routed.table.on_recover
        async def restore_routed() -> None:
            restored(routed, verdicts, route_time)

        @counted.table.on_recover
        async def restore_counted() -> None:
            restored(counted, by_count_key, count_time)
            tally.clear()
            tally.update(entry.rsplit("|", 1)[0] for entry, _, _ in counted.items())

        async def expire_analytics() -> None:
            """Forget windows past the retention, with tombstones; a verdict for them is no longer counted."""
            routed.expire(lambda _, partition, window: route_time.expired(partition, window))
            for entry in counted.expire(lambda _, partition, window: count_time.expired(partition, window)):
                key = entry.rsplit("|", 1)[0]
                tally[key] -= 1
                if tally[key] <= 0:
                    del tally[key]

        @app.agent(verdicts, name="analytics-route")
        async def analytics_route(stream):
            await settled("analytics-route", stream, VERDICT_BATCH, 0.05, route)

        @app.agent(by_count_key, name="analytics-count")
        async def analytics_count(stream):
            await settled("analytics-count", stream, VERDICT_BATCH, 0.05, count)

        app.timer(interval=min(window_s, 10))(guarded("expire_analytics", expire_analytics))

    pools = [m.pool for m in (moderator, stream_moderator) if m is not None]

    async def report_health() -> None:
        """Liveness: every agent running, none crashed. Readiness: partitions assigned, pool answering.
        Also the gauges that need the loop: consumer lag and table sizes."""
        for name, table in tables.items():
            metrics.TABLE_ENTRIES.labels(name).set(len(table))
        crashed = [name for name, agent in app.agents.items() if any(actor.crashed for actor in agent._actors)]
        missing = [name for name, agent in app.agents.items() if not agent._actors]
        assigned = app.consumer.assignment() if app.consumer else set()
        answering = all([await pool_answers(p) for p in pools])
        metrics.CONSUMER_LAG.clear()  # partitions moved to another worker are no longer this one's to report
        for tp in assigned:
            committed = app.consumer._committed_offset.get(tp) or 0
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, (app.consumer.highwater(tp) or 0) - committed))
        live_problem = "; ".join(filter(None, [f"crashed: {', '.join(crashed)}" if crashed else "",
                                               f"not running: {', '.join(missing)}" if missing else ""]))
        ready_problem = "; ".join(filter(None, ["no partitions assigned" if not assigned else "",
                                                "model pool not answering" if not answering else ""]))
        metrics.HEALTH.update(not live_problem, live_problem or f"agents: {', '.join(sorted(app.agents))}",
                              not live_problem and not ready_problem,
                              ready_problem or live_problem or f"{len(assigned)} partitions assigned")

    app.timer(interval=5.0)(guarded("report_health", report_health))
    return app
