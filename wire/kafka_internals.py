"""The private names of aiokafka that gateways and workers share, and nowhere else: the worker's
own (with Faust's) are in `topology/faust_internals.py`.
`tests/wire/test_kafka_internals.py` checks them against the installed version."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import for_code
from aiokafka.protocol.commit import OffsetFetchRequest


async def cluster_metadata(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    """Every topic's metadata, fresh from the broker (the consumer's own holds only its topics)."""
    return await consumer._client.fetch_all_metadata()


def group_errors_raised(consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
    """`consumer`, raising the group-level error of an OffsetFetch answer (v2 and later: the
    coordinator loading, moved or unavailable, as during a broker's fault).

    aiokafka reads only the per-partition errors, so such an answer means "nothing committed" to
    it, and the group's partitions start over from `auto_offset_reset`: after a broker's fault, a
    replay of every record (or, with "latest", a skip). Raised, the error takes aiokafka's own path
    for a failed request: the coordinator is looked up again and the fetch retried (an
    authorization failure is raised to the caller)."""
    client = consumer._client
    send = client.send

    async def checked(node_id, request, *args, **kwargs):
        response = await send(node_id, request, *args, **kwargs)
        if isinstance(request, OffsetFetchRequest) and getattr(response, "error_code", 0):
            error = for_code(response.error_code)
            raise error(f"the group's committed offsets were not given: {error.__name__}")
        return response

    client.send = checked
    return consumer
