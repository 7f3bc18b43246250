"""The topic registry: every topic guardstream reads or writes, with its key and retention."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code

from guardstream.wire.errors import NotAuthorized
from guardstream.wire.settings import KafkaSettings

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    key: str
    value: str
    compacted: bool = False
    retention_ms: int = 7 * DAY_MS

    def configs(self) -> dict[str, str]:
        if self.compacted:  # segments roll hourly, so the cleaner can drop what was superseded within hours
            return {"cleanup.policy": "compact", "segment.ms": str(HOUR_MS), "min.cleanable.dirty.ratio": "0.1",
                    "delete.retention.ms": str(HOUR_MS)}
        return {"retention.ms": str(self.retention_ms)}


@dataclass(frozen=True)
class Topics:
    conversations: TopicSpec
    chunks: TopicSpec
    verdicts: TopicSpec
    actions: TopicSpec
    analytics: TopicSpec
    dlq: TopicSpec
    analytics_by_key: TopicSpec  # internal: verdicts re-keyed for counting
    replies: TopicSpec  # verdicts again, each in the partition its request named (`reply_to`): one per gateway
    policies: TopicSpec  # one partition: every reader sees the changes in one order
    canary: TopicSpec  # main and canary verdicts side by side, off the enforcement path
    review_decisions: TopicSpec  # reviewers' decisions: enforcement follows each with an action

    def all(self) -> list[TopicSpec]:
        return [self.conversations, self.chunks, self.verdicts, self.actions, self.analytics, self.dlq,
                self.analytics_by_key, self.replies, self.policies, self.canary, self.review_decisions]


def topics_for(kafka: KafkaSettings) -> Topics:
    p, n = kafka.topic_prefix, kafka.topic_partitions
    return Topics(
        conversations=TopicSpec("conversations", f"{p}conversations", n, "conversation_id", "ConversationEvent"),
        chunks=TopicSpec("chunks", f"{p}chunks", n, "conversation_id", "TokenChunkEvent"),
        verdicts=TopicSpec("verdicts", f"{p}verdicts", n, "conversation_id", "VerdictEvent", retention_ms=30 * DAY_MS),
        actions=TopicSpec("actions", f"{p}actions", n, "conversation_id", "ActionEvent"),
        analytics=TopicSpec("analytics", f"{p}analytics", n, "window|tenant|risk|category", "WindowCount", compacted=True),
        dlq=TopicSpec("dlq", f"{p}dlq", n, "original key", "DeadLetter", retention_ms=30 * DAY_MS),
        analytics_by_key=TopicSpec("analytics_by_key", f"{kafka.group_id}-analytics-by-key", n,
                                   "window|tenant|risk|category", "b'1' per counted verdict", retention_ms=DAY_MS),
        replies=TopicSpec("replies", f"{p}replies", kafka.reply_partitions, "conversation_id", "VerdictEvent",
                          retention_ms=DAY_MS),
        policies=TopicSpec("policies", f"{p}policies", 1, "tenant", "PolicyRecord", compacted=True),
        canary=TopicSpec("canary", f"{p}canary", n, "conversation_id", "CanaryRecord", retention_ms=30 * DAY_MS),
        review_decisions=TopicSpec("review_decisions", f"{p}review-decisions", n, "conversation_id", "ReviewDecision",
                                   retention_ms=30 * DAY_MS),
    )


async def ensure_topics(kafka: KafkaSettings, bootstrap: str, roles: tuple[str, ...] | None = None) -> list[str]:
    """Create missing topics (of these roles; default: all); returns the names that were created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka.client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics_for(kafka).all() if t.name not in existing and (roles is None or t.role in roles)]
        if wanted:
            response = await admin.create_topics([NewTopic(t.name, t.partitions, kafka.topic_replication,
                                                            topic_configs=t.configs()) for t in wanted])
            for name, code, *detail in response.topic_errors:
                if code == TopicAuthorizationFailedError.errno:
                    raise NotAuthorized("Create (or Describe, if it exists)", f"topic {name}")
                if code not in (0, TopicAlreadyExistsError.errno):  # already there: another worker created it first
                    raise KafkaError(f"creating topic {name} failed: {for_code(code).__name__} {(detail or [''])[0] or ''}")
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def cluster_id(kafka: KafkaSettings, bootstrap: str) -> str | None:
    """The Kafka cluster's id (DescribeCluster); Tansu answers `TANSU_CLUSTER_ID`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka.client_options())
    await admin.start()
    try:
        return (await admin.describe_cluster())["cluster_id"]
    finally:
        await admin.close()
