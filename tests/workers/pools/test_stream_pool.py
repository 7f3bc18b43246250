"""run_calls' failure handling with a fake engine: a CUDA error ends the actor process."""

import pytest

from guardstream.workers.pools import stream_pool
from guardstream.workers.pools.stream_pool import StreamCall, run_calls


class BrokenEngine:
    sessions: dict = {}

    def step(self, chunks):
        raise RuntimeError("CUDA error: device-side assert triggered")

    def close(self, session):
        pass

    def evict_idle(self):
        pass


def test_a_cuda_error_makes_the_actor_exit_so_that_ray_restarts_it(monkeypatch):
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(stream_pool.os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        run_calls(BrokenEngine(), [StreamCall("s", [1], prompt_ids=[1, 2])])
    assert exits == [70]
