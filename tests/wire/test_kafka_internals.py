"""The private names of aiokafka that gateways and workers share (`wire/kafka_internals.py`),
checked against the installed version: a release that renames or changes one fails here, not in a
gateway."""

from __future__ import annotations

import inspect

from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.errors import GroupAuthorizationFailedError, GroupLoadInProgressError
from aiokafka.protocol.commit import OffsetFetchRequest, OffsetFetchResponse_v3
from aiokafka.structs import OffsetAndMetadata, TopicPartition
import faust
import pytest

from guardstream.reply_claim import ReplyClaim
from guardstream.topology.consumer import StrictTransport
from guardstream.topology.own_group import group_consumer
from guardstream.topology.settings import Settings
from guardstream.wire.kafka_internals import cluster_metadata, group_errors_raised
from guardstream.wire.settings import KafkaSettings

LOADING, NOT_COORDINATOR, GROUP_AUTHORIZATION_FAILED = 14, 16, 30


async def test_cluster_metadata_is_every_topics_metadata_fetched_by_the_consumers_client():
    assert inspect.iscoroutinefunction(AIOKafkaClient.fetch_all_metadata)
    assert "ClusterMetadata(" in inspect.getsource(AIOKafkaClient.fetch_all_metadata)  # a fresh one, all topics
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    assert isinstance(consumer._client, AIOKafkaClient)
    fresh = ClusterMetadata()

    async def fetched() -> ClusterMetadata:
        return fresh

    consumer._client.fetch_all_metadata = fetched
    assert await cluster_metadata(consumer) is fresh


async def fetched_committed(consumer: AIOKafkaConsumer, *answers) -> dict:
    """What aiokafka's own group coordinator makes of the coordinator's OffsetFetch `answers`,
    sent over `consumer`'s client (the broker faked: each request gets the next answer)."""
    pending = list(answers)
    client = consumer._client

    async def answered(node_id, request, *args, **kwargs):
        return pending.pop(0)

    async def found(*args, **kwargs):
        return 0

    async def ready(*args, **kwargs):
        return True

    client.send, client.coordinator_lookup, client.ready, client.force_metadata_update = answered, found, ready, found
    group_errors_raised(consumer)  # as the product wraps a consumer: after its client exists
    coordinator = GroupCoordinator(client, SubscriptionState(), group_id="g", retry_backoff_ms=1)
    try:
        return await coordinator.fetch_committed_offsets([TopicPartition("t", 0)])
    finally:
        await coordinator.close()


def loading(code: int = LOADING) -> OffsetFetchResponse_v3:
    return OffsetFetchResponse_v3(0, [], code)


COMMITTED = OffsetFetchResponse_v3(0, [("t", [(0, 42, "", 0)])], 0)


async def test_stock_aiokafka_reads_a_loading_coordinator_as_nothing_committed():
    """The failure group_errors_raised exists for: if a release fixes it, this fails, and the wrap can go."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g")
    client = consumer._client

    async def answered(*args, **kwargs):
        return loading()

    client.send = answered
    coordinator = GroupCoordinator(client, SubscriptionState(), group_id="g", retry_backoff_ms=1)
    coordinator.coordinator_id = 0
    try:
        assert await coordinator.fetch_committed_offsets([TopicPartition("t", 0)]) == {}
    finally:
        await coordinator.close()


@pytest.mark.parametrize("group_error", [LOADING, NOT_COORDINATOR])
async def test_a_group_level_error_is_retried_until_the_coordinator_gives_the_offsets(group_error):
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g")
    committed = await fetched_committed(consumer, loading(group_error), loading(group_error), COMMITTED)
    assert committed == {TopicPartition("t", 0): OffsetAndMetadata(42, "")}


async def test_a_refused_group_is_raised_not_read_as_nothing_committed():
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g")
    with pytest.raises(GroupAuthorizationFailedError):
        await fetched_committed(consumer, loading(GROUP_AUTHORIZATION_FAILED))


def faust_s_consumer():
    app = faust.App("internals-probe", broker="kafka://127.0.0.1:1")
    app.transport = StrictTransport(app.conf.broker_consumer, app)
    app.transport.fetch_max_wait_ms = 20
    return app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)


def a_sink_s_consumer():
    return group_consumer(Settings.load({}), "127.0.0.1:1", "g", "t")


def a_gateway_s_claim():
    return ReplyClaim("127.0.0.1:1", KafkaSettings(), "replies", lambda home: None)._consumer


@pytest.mark.parametrize("make", [faust_s_consumer, a_sink_s_consumer, a_gateway_s_claim])
async def test_every_group_consumer_of_the_product_raises_group_errors(make, monkeypatch):
    """Faust's consumer (the agents), the workers' own groups (audit, canary) and a gateway's claim
    of its replies partition: each reads committed offsets, so each is wrapped."""
    async def answered(self, node_id, request, *args, **kwargs):
        return loading()

    monkeypatch.setattr(AIOKafkaClient, "send", answered)
    consumer = make()
    with pytest.raises(GroupLoadInProgressError):
        await consumer._client.send(0, OffsetFetchRequest("g", [("t", [0])]))
