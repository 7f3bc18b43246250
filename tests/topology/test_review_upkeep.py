"""The review agent's upkeep, without a broker or a database: the gauges it sets from the
queue's numbers (bounded labels, a label that emptied reads 0), and a database that fails the
upkeep leaves the reader reading."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest

from guardstream.topology.agents.review import Review
from guardstream.topology.own_group import VerdictSink
from guardstream.wire import metrics
from guardstream.wire.policy import PoliciesInForce, Policy


def review_agent(queue) -> Review:
    agent = Review.__new__(Review)  # the service's state without starting it: Faust makes it at app start
    agent.queue, agent.shown = queue, {}
    agent.wiring = SimpleNamespace(policies=PoliciesInForce(Policy.model_validate({"tenants": {"acme": {}}})))
    return agent


def sample(gauge, label: str) -> float:
    return gauge.labels(label)._value.get()


def test_the_gauges_bound_their_labels_and_read_zero_once_emptied():
    agent = review_agent(None)
    agent.show_rates([{"tenant": "acme", "decided": 3}, {"tenant": "made-up-1", "decided": 2}, {"tenant": "made-up-2", "decided": 1}],
                     [{"category": "PII", "decided": 4, "overturned": 1}, {"category": "<b>", "decided": 2, "overturned": 2}])
    assert (sample(metrics.REVIEW_DECIDED, "acme"), sample(metrics.REVIEW_DECIDED, "other")) == (3, 3)
    assert (sample(metrics.REVIEW_OVERTURNED, "PII"), sample(metrics.REVIEW_OVERTURNED, "other")) == (0.25, 1.0)
    agent.show_depth([{"tenant": "acme", "items": 2, "oldest_s": 9.5}])
    agent.show_depth([])
    assert sample(metrics.REVIEW_QUEUE, "acme") == 0 and sample(metrics.REVIEW_OLDEST, "acme") == 0


async def test_a_database_that_fails_the_upkeep_leaves_the_reader_reading(monkeypatch):
    class Away:
        async def depth(self):
            raise psycopg.OperationalError("connection refused")

    async def settled(_self, _consumer):
        pass

    monkeypatch.setattr(VerdictSink, "step", settled)
    agent = review_agent(Away())
    await agent.step(consumer=None)  # logged, not raised: the consumer is kept
    with pytest.raises(psycopg.OperationalError):
        await review_agent(Away()).upkeep()
