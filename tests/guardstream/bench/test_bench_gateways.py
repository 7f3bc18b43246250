"""`guardstream bench gateways` measures through the real pipeline (its numbers are never asserted,
only what they count): with fixed or claimed reply partitions each gateway fetches and decodes only
its own verdicts."""

from __future__ import annotations

import asyncio

import pytest

from guardstream.bench.gateways import MODES, _run, gateways_table

from tests.guardstream.test_client_pipeline import client_settings

pytestmark = pytest.mark.integration


def test_each_gateways_reading_is_counted_per_request_of_its_own(worker):
    settings = client_settings()
    fixed = asyncio.run(_run(settings, worker.bootstrap, 2, 6, claimed=False, run="bgw-fixed"))
    claimed = asyncio.run(_run(settings, worker.bootstrap, 2, 6, claimed=True, run="bgw-claimed"))
    assert (fixed.mode, claimed.mode) == MODES
    assert fixed.decoded == claimed.decoded == 6  # its own verdicts only
    assert 6 <= fixed.records < 12 and 6 <= claimed.records < 12  # its own, never the other's (a redelivery aside)
    table = gateways_table([fixed, claimed])
    assert list(table.columns[-2].cells) == ["1.00", f"{claimed.records / fixed.records:.2f}"]
