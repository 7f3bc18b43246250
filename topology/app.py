"""The Faust app: which agents a worker runs, on which topics, and how it reports its health.

    conversations ──[gen]──────────► verdicts ──[enforcement]──► actions
    chunks ───────[stream]─────────►    │ ──[audit]────────► PostgreSQL / SQLite (its own consumer group)
         bad input ──────────────► dlq   │
                                         └──[analytics-route]──► analytics-by-key ──[analytics-count]──► analytics
    conversations, chunks, verdicts ──[canary]──► canary   (a sample; its own consumer group and actors)

A worker runs the agents named in `settings.agents` (all by default), so the Gen and Stream paths
and the verdict sinks can be scaled as separate deployments on the same topics. Each agent's
wiring is its own module in `topology/agents/`; what they share (delivery, dead letters, the
settle-then-ack loop) is `topology/wiring.py`.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

import faust

from guardstream.topology.agents import analytics, audit, canary, enforcement, gen, review, stream
from guardstream.topology.consumer import StrictTransport, refetch_cleared
from guardstream.topology.faust_internals import agent_actors
from guardstream.wire.policy import PoliciesInForce
from guardstream.wire.policy_feed import PolicyFeed
from guardstream.topology.settings import Settings
from guardstream.topology.state import STORE_URLS, ReplayCountedTable, state_bytes
from guardstream.topology.wiring import Wiring, guarded
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.workers.pools import actors
from guardstream.workers.moderation.stream_moderation import StreamModerator
from guardstream.wire import metrics
from guardstream.topology.health import HEALTH

log = logging.getLogger(__name__)


def _credentials(settings: Settings):
    options = settings.kafka.client_options()
    if settings.kafka.sasl_mechanism:
        return faust.SASLCredentials(username=settings.kafka.sasl_username, password=settings.kafka.sasl_password,
                                     mechanism=settings.kafka.sasl_mechanism, ssl_context=options.get("ssl_context"))
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


async def pool_answers(pool, timeout_s: float = 10) -> bool:
    """Every actor answers (and reports its memory) within the timeout."""
    try:
        reports = await actors.gather((actor.ready.remote() for actor in pool.actors), timeout_s, RuntimeError)
    except Exception:  # noqa: BLE001 - any failure to answer means not ready
        return False
    metrics.record_actors(pool.kind, reports)
    return True


def create_app(settings: Settings, bootstrap: str, moderator: GenModerator | None,
               stream_moderator: StreamModerator | None, feed: PolicyFeed | None = None,
               canary_loading: Future | None = None) -> faust.App:
    """The agents named in `settings.agents`; the moderators of agents left out may be None.
    `feed`, the policies feed caught up: followed while the app runs, its refused records dead-lettered
    (without one, the starting document decides).
    `canary_loading`: the canary pool's models as they load (None when they cannot), when this
    worker runs a canary: the app starts without waiting for them."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    settings.state_dir.chmod(0o700)  # the tables hold prompts and replies in flight: this worker's alone
    app = faust.App(
        settings.kafka.group_id, broker=f"kafka://{bootstrap}", broker_credentials=_credentials(settings),
        store=STORE_URLS[settings.table_store],
        topic_partitions=settings.kafka.topic_partitions, topic_replication_factor=settings.kafka.topic_replication, web_enabled=False,
        consumer_auto_offset_reset="earliest", producer_acks=-1, topic_allow_declare=True,
        broker_rebalance_timeout=settings.kafka.rebalance_timeout_s, broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=1, producer_max_batch_size=1_048_576,
        # No standby copies: they would fill the tables with partitions this worker does not own,
        # which its timers (forgetting streams, expiring windows) would then delete for their owner.
        # A new owner restores a partition from its changelog instead.
        table_standby_replicas=0, Table=ReplayCountedTable,
        datadir=str(settings.state_dir / "{conf.name}-data"),  # not the working directory
    )
    app.transport = StrictTransport(app.conf.broker_consumer, app)  # commits only what agents acked
    refetch_cleared(app)  # records Faust's flow control drops from its queues are fetched again
    app.transport.fetch_max_wait_ms = settings.kafka.fetch_max_wait_ms
    app.transport.seal_changelogs = settings.kafka.broker_kind == "tansu"
    app.transport.idempotent = settings.kafka.broker_kind == "kafka"

    w = Wiring(app, settings, bootstrap, feed.policies if feed else PoliciesInForce(settings.policy))
    if "gen" in settings.agents:
        gen.register(w, moderator)
    if "stream" in settings.agents:
        stream.register(w, stream_moderator)
    if "enforcement" in settings.agents:
        enforcement.register(w)
    if "audit" in settings.agents:
        audit.register(w)
    if "review" in settings.agents:
        review.register(w)
    if "analytics" in settings.agents:
        analytics.register(w)
    canary_state = canary.register(w, canary_loading) if canary_loading is not None else None

    pools = [m.pool for m in (moderator, stream_moderator) if m is not None]

    async def report_health() -> None:
        """Liveness: every agent running, none crashed. Readiness: partitions assigned, pool answering.
        Also the gauges that need the loop: consumer lag and table sizes."""
        for name, table in w.tables.items():
            metrics.TABLE_ENTRIES.labels(name).set(len(table))
        crashed = [name for name, agent in app.agents.items() if any(actor.crashed for actor in agent_actors(agent))]
        missing = [name for name, agent in app.agents.items() if not agent_actors(agent)]
        assigned = app.consumer.assignment() if app.consumer else set()
        answering = all([await pool_answers(p) for p in pools])
        metrics.CONSUMER_LAG.clear()  # partitions moved to another worker are no longer this one's to report
        sources = {agent.channel.get_topic_name() for agent in app.agents.values()}  # not changelogs, not Faust's own
        for tp in (tp for tp in assigned if tp.topic in sources):
            committed = app.consumer.committed(tp) or 0
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, (app.consumer.highwater(tp) or 0) - committed))
        refusing = [problem for handler in w.outcomes.values() for problem in (handler.refusing, handler.stuck) if problem]
        metrics.STATE_BYTES.set(state_bytes(settings.state_dir))
        live_problem = "; ".join(filter(None, [f"crashed: {', '.join(crashed)}" if crashed else "",
                                               f"not running: {', '.join(missing)}" if missing else "", *refusing]))
        policies_ok, policies_state = feed.readiness() if feed is not None else (True, "")
        ready_problem = "; ".join(filter(None, ["no partitions assigned" if not assigned else "",
                                                "model pool not answering" if not answering else "",
                                                "" if policies_ok else policies_state]))
        ready_detail = f"{len(assigned)} partitions assigned" + (f"; {canary_state.status}" if canary_state else "")
        HEALTH.update(not live_problem, live_problem or f"agents: {', '.join(sorted(app.agents))}",
                      not live_problem and not ready_problem, ready_problem or live_problem or ready_detail)

    app.timer(interval=5.0)(guarded("report_health", report_health))
    if feed is not None:
        async def follow_policies() -> None:
            await feed.follow(lambda letter: w.send_letters([letter]))

        app.task(follow_policies)
    return app
