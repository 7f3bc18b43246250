"""The actor's one decision about failures: a lost device ends its process, so that Ray restarts it."""

import pytest

from guardstream.workers.engines.messages import StreamCall
from guardstream.workers.engines.stream_engine import DeviceLost
from guardstream.workers.pools import stream_pool


class LostDevice:
    def run(self, calls):
        raise DeviceLost("CUDA error: device-side assert triggered")


def test_a_lost_device_makes_the_actor_exit_so_that_ray_restarts_it(monkeypatch):
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(stream_pool.os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        stream_pool.run_or_exit(LostDevice(), [StreamCall("s", [1], prompt_ids=[1, 2])])
    assert exits == [70]
