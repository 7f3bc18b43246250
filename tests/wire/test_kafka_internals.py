"""The one private name of aiokafka that gateways use (`wire/kafka_internals.py`), checked against
the installed version: a release that renames or changes it fails here, not in a gateway."""

from __future__ import annotations

import inspect

from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata

from guardstream.wire.kafka_internals import cluster_metadata


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
