"""The one private name of aiokafka that gateways and workers share, and nowhere else: the
worker's own (with Faust's) are in `topology/faust_internals.py`.
`tests/wire/test_kafka_internals.py` checks it against the installed version."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata


async def cluster_metadata(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    """Every topic's metadata, fresh from the broker (the consumer's own holds only its topics)."""
    return await consumer._client.fetch_all_metadata()
