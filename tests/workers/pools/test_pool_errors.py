"""Whatever Ray answers instead of a result is "pool unavailable" (retried by the agent, then the
fail mode), and a call nobody waits for any more is cancelled. No cluster: fake calls."""

import asyncio

import pytest
import ray
from ray.exceptions import ActorDiedError, NodeDiedError, ObjectLostError, OwnerDiedError, RaySystemError

from guardstream.workers.pools import actors


class Unavailable(ConnectionError):
    pass


@pytest.mark.parametrize("error", [
    ObjectLostError("ab" * 14, None, "call"), OwnerDiedError("ab" * 14, None, "call"), NodeDiedError("node 3 died"),
    RaySystemError("gcs away"), ActorDiedError(),
], ids=lambda e: type(e).__name__)
def test_every_ray_error_is_pool_unavailable(error):
    async def fails():
        raise error

    with pytest.raises(Unavailable, match=type(error).__name__):
        asyncio.run(actors.gather([fails()], 5, Unavailable))


def test_a_call_past_its_timeout_is_cancelled(monkeypatch):
    cancelled = []
    monkeypatch.setattr(ray, "cancel", cancelled.append)
    sent = ["ref-1", "ref-2"]

    async def hangs():
        await asyncio.Event().wait()

    with pytest.raises(Unavailable, match="TimeoutError"):
        asyncio.run(actors.gather([hangs()], 0.05, Unavailable, sent))
    assert cancelled == sent
