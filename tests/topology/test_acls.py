"""The ACL set of `guardstream acls`, applied to a real broker with a SASL/SCRAM-SHA-512 listener over
TLS (a CA made by the test) and one principal per role: a worker runs and answers a gateway with it,
and every refusal the threat model promises happens, named, never as a silent allow."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType,
                                   ResourceType)

from guardstream.client import Guard, conversation
from guardstream.console.outbox import DecisionOutbox
from guardstream.dev.kafka import SUPER_USER, KafkaCluster
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.kafka_io import produce_lines, records, set_policy
from guardstream.schemas import Action
from guardstream.topology.acls import acl_set
from guardstream.wire.errors import NotAuthorized
from guardstream.topology.settings import Settings
from guardstream.wire.topics import ensure_topics
from guardstream.wire.policy import Policy

from tests.helpers.pipeline import POLICY, start_worker
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

USERS = {SUPER_USER: "admin-secret", "gs-worker": "worker-secret", "gs-gateway": "gateway-secret",
         "gs-sink": "sink-secret", "gs-policy": "policy-secret", "gs-reader": "reader-secret",
         "gs-reviewer": "reviewer-secret"}
ROLE_USERS = {"worker": "gs-worker", "gateway": "gs-gateway", "sink": "gs-sink", "policy-admin": "gs-policy",
              "reviewer": "gs-reviewer"}
BASE = Settings.load({}, topic_prefix="acl.", app_id="gs-acl", policy=Policy.model_validate(POLICY))


def as_user(cluster: KafkaCluster, user: str) -> Settings:
    return BASE.model_copy(update={"kafka": BASE.kafka.model_copy(update=dict(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username=user, sasl_password=USERS[user],
        ssl_cafile=cluster.ca_file))})


def apply_acls(cluster: KafkaCluster) -> int:
    """The roles' ACL set, as the admin would apply it, plus `gs-reader`: the gateway's reads only."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "security.protocol": "SASL_SSL",
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": SUPER_USER,
                         "sasl.password": USERS[SUPER_USER], "ssl.ca.location": str(cluster.ca_file)})
    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER}
    acls = acl_set(BASE)
    reader = [a for a in acls if a.role == "gateway" and a.operation in ("Read", "Describe")]
    bindings = [AclBinding(kinds[a.resource], a.name, ResourcePatternType[a.pattern.upper()], f"User:{user}", "*",
                           AclOperation[a.operation.upper().replace("DESCRIBECONFIGS", "DESCRIBE_CONFIGS")],
                           AclPermissionType.ALLOW)
                for a, user in [(a, ROLE_USERS[a.role]) for a in acls] + [(a, "gs-reader") for a in reader]]
    for future in admin.create_acls(bindings).values():
        future.result(30)

    async def visible() -> bool:  # the brokers take ACLs from the metadata log a moment later
        client = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, **as_user(cluster, "gs-sink").kafka.client_options())
        await client.start()
        try:
            return "acl.verdicts" in await client.list_topics()
        finally:
            await client.close()

    eventually(lambda: asyncio.run(visible()), 30, "the ACLs in force", every_s=0.2)
    return len(bindings)


def test_each_role_may_do_what_it_needs_and_every_refusal_is_named(tiny, tmp_path):
    unsafe = next(ex for ex in load_corpus("train") if ex.kind == "prompt" and ex.label == "Unsafe")
    with KafkaCluster(users=USERS, directory=tmp_path / "kafka") as cluster:
        asyncio.run(ensure_topics(as_user(cluster, SUPER_USER).kafka, cluster.bootstrap))
        applied = apply_acls(cluster)
        admin, gateway, sink, reader, reviewer = (as_user(cluster, u) for u in ("gs-policy", "gs-gateway", "gs-sink",
                                                                                "gs-reader", "gs-reviewer"))

        # only the policy admin writes policies
        assert asyncio.run(set_policy(admin, cluster.bootstrap, "acme", {"mode": "strict"}, "alice")) == 1
        for user in ("gs-gateway", "gs-sink", "gs-worker"):
            with pytest.raises(NotAuthorized, match=r"acl\.policies"):
                asyncio.run(set_policy(as_user(cluster, user), cluster.bootstrap, "acme", {"mode": "observe"}, "mallory"))

        worker = start_worker(cluster.bootstrap, str(tiny.gen), tmp_path / "worker.log", app_id="gs-acl",
                              topic_prefix="acl.", agents="gen,enforcement", policy=json.dumps(POLICY),
                              kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                              kafka_sasl_username="gs-worker", kafka_sasl_password=USERS["gs-worker"],
                              kafka_ssl_cafile=str(cluster.ca_file))
        try:
            async def scenario():
                # the gateway sends intake and reads its reply partition: the worker wrote the reply
                async with Guard(cluster.bootstrap, gateway, timeout_s=120, reply_partition=3) as guard:
                    judged = await guard.moderate(conversation("acl-1", "acme", unsafe.messages[0]["content"]))
                # a gateway writing a verdict, a sink writing anything: refused, named
                refusals = []
                for settings, role in ((gateway, "verdicts"), (gateway, "actions"), (sink, "verdicts"),
                                       (sink, "conversations"), (sink, "policies"), (gateway, "review_decisions"),
                                       (sink, "review_decisions"), (reviewer, "verdicts"), (reviewer, "actions")):
                    with pytest.raises(NotAuthorized) as refused:
                        await produce_lines(settings, cluster.bootstrap, role, [json.dumps({"forged": True})])
                    refusals.append(str(refused.value))
                # a principal that may read but not write intake: the fail mode answers, saying why
                async with Guard(cluster.bootstrap, reader, timeout_s=30, reply_partition=4) as guard:
                    silenced = await guard.moderate(conversation("acl-2", "acme", "hello"))
                # the sink reads verdicts
                read = [m async for m in records(sink, cluster.bootstrap, "verdicts", idle_timeout_s=2)]
                # the review console's producer (idempotent, acks=all) writes decisions
                console = DecisionOutbox(None, reviewer, cluster.bootstrap)
                try:
                    decided = await (await console.connected()).send_and_wait(console.topic, b"{}")
                finally:
                    await console.stop()
                return judged, refusals, silenced, read, decided

            judged, refusals, silenced, read, decided = asyncio.run(scenario())
            assert "Traceback" not in worker.log()
        finally:
            worker.stop()
    assert judged.verdict is not None and judged.action is Action.block and judged.verdict.policy_version == "acme@1"
    assert all("not authorized: the broker's ACLs refuse Write on topic acl." in r for r in refusals), refusals
    assert decided.topic == "acl.review-decisions"
    assert silenced.verdict is None and silenced.action is Action.block  # acme fails closed
    assert "not authorized" in silenced.reason and "acl.conversations" in silenced.reason, silenced.reason
    assert any(json.loads(m.value)["source_event_id"] == judged.verdict.source_event_id for m in read)
    print(f"\nACLs: {applied} bindings; refusals: {len(refusals) + 3} named, none allowed")
