"""Judging a labelled set directly on a Gen engine (`--through engines`): offline, no broker."""

from __future__ import annotations

from collections.abc import Callable

from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import Prediction, yes_no
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest, GenResult


def prediction(result: GenResult) -> Prediction:
    j = result.judgement
    if j is None:
        return Prediction("Error", latency_ms=result.latency_ms)
    return Prediction(j.risk_level.value, tuple(j.categories), yes_no(j.refusal), result.latency_ms, result.probabilities)


def judge(items: list[LabelledItem], engine: GenEngine, batch_size: int = 8,
          progress: Callable[[int, int], None] = lambda done, total: None) -> list[Prediction]:
    """The engine's prediction for each item, in order, `batch_size` at a time."""
    predictions: list[Prediction] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        requests = [GenRequest([m.model_dump(mode="json") for m in i.messages], Moderate(i.kind)) for i in batch]
        predictions += [prediction(r) for r in engine.classify(requests)]
        progress(len(predictions), len(items))
    return predictions
