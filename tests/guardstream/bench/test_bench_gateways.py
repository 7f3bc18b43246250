"""`guardstream bench gateways` measures through the real pipeline (its numbers are never asserted,
only what they count): with reply partitions each gateway fetches only its own verdicts, reading
every verdict it fetches the others' too, and either way it decodes only its own."""

from __future__ import annotations

import asyncio

import pytest

from guardstream.bench.gateways import MODES, _run, gateways_table

from tests.guardstream.test_client_pipeline import client_settings

pytestmark = pytest.mark.integration


def test_each_gateways_reading_is_counted_per_request_of_its_own(worker):
    settings = client_settings()
    every = asyncio.run(_run(settings, worker.bootstrap, 2, 6, routed=False, run="bgw-all"))
    routed = asyncio.run(_run(settings, worker.bootstrap, 2, 6, routed=True, run="bgw-own"))
    assert (every.mode, routed.mode) == MODES
    assert every.decoded == routed.decoded == 6  # its own verdicts only
    assert every.records >= 12 and 6 <= routed.records < 12  # both gateways' verdicts, or its own (a redelivery aside)
    table = gateways_table([every, routed])
    assert list(table.columns[-2].cells) == ["1.00", f"{routed.records / every.records:.2f}"]
