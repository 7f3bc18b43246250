"""Who may do what on Kafka: the ACL set of each role, from the settings' topic and group names.

`guardstream acls` prints it as `kafka-acls` lines or Strimzi `KafkaUser` resources, and the ACL
test applies the same set to a real broker. Only the workers write verdicts, actions and replies;
only the policy admin writes policies; only the review console writes reviewers' decisions;
gateways write intake and read their replies; sinks read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from guardstream.topology.settings import Settings
from guardstream.wire.topics import topics_for

ROLES = ("worker", "gateway", "sink", "policy-admin", "reviewer")
Operation = Literal["Read", "Write", "Create", "Describe", "DescribeConfigs"]


@dataclass(frozen=True)
class Acl:
    role: str
    resource: Literal["topic", "group", "cluster"]
    name: str
    pattern: Literal["literal", "prefixed"]
    operation: Operation


def role_users(given: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Each role's user name: `guardstream-<role>` unless `ROLE=NAME` says otherwise."""
    named = {role: f"guardstream-{role}" for role in ROLES}
    for entry in given:
        role, _, name = entry.partition("=")
        if role not in ROLES or not name:
            raise ValueError(f"--user takes ROLE=NAME with ROLE one of {', '.join(ROLES)}, not {entry!r}")
        named[role] = name
    return named


def acl_set(settings: Settings) -> list[Acl]:
    t, group = topics_for(settings.kafka), settings.kafka.group_id

    def topics(role: str, operation: Operation, *specs) -> list[Acl]:
        return [Acl(role, "topic", spec.name, "literal", operation) for spec in specs]

    worker = [
        *topics("worker", "Read", t.conversations, t.chunks, t.verdicts, t.policies, t.review_decisions),
        *topics("worker", "Write", t.verdicts, t.actions, t.analytics, t.dlq, t.replies, t.canary),
        *topics("worker", "Describe", *t.all()),
        *topics("worker", "DescribeConfigs", t.policies),  # checked at start: one partition, compacted
        # its own topics (changelogs, the re-keyed verdicts, Faust's assignor) and groups share the app's id
        *[Acl("worker", "topic", group, "prefixed", op) for op in ("Create", "Read", "Write", "Describe")],
        Acl("worker", "group", group, "prefixed", "Read"),
        Acl("worker", "cluster", "kafka-cluster", "literal", "Describe"),  # which broker it is (Tansu or Kafka)
    ]
    gateway = [*topics("gateway", "Write", t.conversations, t.chunks), *topics("gateway", "Read", t.replies, t.policies),
               *topics("gateway", "Describe", t.conversations, t.chunks, t.replies, t.policies),
               Acl("gateway", "group", settings.kafka.gateway_group, "literal", "Read")]  # claims its reply partition
    sink = [*topics("sink", "Read", t.verdicts), *topics("sink", "Describe", t.verdicts),
            Acl("sink", "group", f"{settings.kafka.topic_prefix}sink", "prefixed", "Read")]
    admin = [acl for op in ("Read", "Write", "Describe", "DescribeConfigs") for acl in topics("policy-admin", op, t.policies)]
    console = [*topics("reviewer", "Write", t.review_decisions), *topics("reviewer", "Describe", t.review_decisions)]
    return worker + gateway + sink + admin + console


def kafka_acls_lines(settings: Settings, principals: dict[str, str]) -> list[str]:
    """`kafka-acls.sh` commands that grant the set, one per ACL; `principals` maps role → `User:name`."""
    lines = []
    for acl in acl_set(settings):
        target = {"topic": f"--topic {acl.name}", "group": f"--group {acl.name}", "cluster": "--cluster"}[acl.resource]
        pattern = " --resource-pattern-type prefixed" if acl.pattern == "prefixed" else ""
        lines.append(f"kafka-acls.sh --bootstrap-server $BOOTSTRAP --command-config admin.properties --add "
                     f"--allow-principal {principals[acl.role]} --operation {acl.operation} {target}{pattern}")
    return lines


def strimzi_users(settings: Settings, users: dict[str, str], cluster: str) -> list[dict]:
    """Strimzi `KafkaUser` resources (SCRAM-SHA-512), one per role; `users` maps role → user name."""
    resources = []
    for role in ROLES:
        grouped: dict[tuple, list[str]] = {}  # one entry per resource, with all its operations
        for acl in acl_set(settings):
            if acl.role == role:
                grouped.setdefault((acl.resource, acl.name, acl.pattern), []).append(acl.operation)
        acls = [{"resource": {"type": kind, **({"name": name, "patternType": pattern} if kind != "cluster" else {})},
                 "operations": operations} for (kind, name, pattern), operations in grouped.items()]
        resources.append({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaUser",
                          "metadata": {"name": users[role], "labels": {"strimzi.io/cluster": cluster}},
                          "spec": {"authentication": {"type": "scram-sha-512"},
                                   "authorization": {"type": "simple", "acls": acls}}})
    return resources
