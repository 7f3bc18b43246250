"""`guardstream policy` against the real broker, and a gateway client whose fail modes follow the
policies topic while it runs."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from click.testing import CliRunner

from guardstream.cli import main
from guardstream.client import Guard
from guardstream.schemas import Action
from guardstream.kafka_io import records, set_policy
from guardstream.topology.settings import Settings
from guardstream.wire.topics import ensure_topics
from guardstream.wire.policy import Policy

pytestmark = pytest.mark.integration


def run(*args: str, stdin: str | None = None, prefix: str):
    env = {"GUARDSTREAM_TOPIC_PREFIX": prefix, "GUARDSTREAM_POLICY": ""}
    return CliRunner().invoke(main, ["policy", *args], input=stdin, env=env)


def test_policy_set_checks_the_document_counts_versions_and_show_and_history_read_them(broker, monkeypatch):
    monkeypatch.setenv("GUARDSTREAM_KAFKA_BOOTSTRAP", broker.bootstrap)
    prefix = "pcli."
    refused = run("set", "acme", "-", stdin='{"mode": "lenient"}', prefix=prefix)
    assert refused.exit_code == 1 and "nothing was sent" in refused.output
    assert "Input should be 'strict', 'loose' or 'observe'" in refused.output
    assert run("set", "acme", "-", stdin="{not json", prefix=prefix).exit_code == 1
    assert run("set", "not a tenant!", "-", stdin="{}", prefix=prefix).exit_code == 1
    huge = json.dumps({"category_actions": {f"category-{i:05d}": "review" for i in range(4000)}})  # readers refuse it
    too_big = run("set", "acme", "-", stdin=huge, prefix=prefix)
    assert too_big.exit_code == 1 and "is not a Qwen3Guard category" in too_big.output
    for document in ('{"mode": "observe"}', '{"mode": "loose", "fail_mode": "open"}'):
        result = run("set", "acme", "-", "--by", "alice", stdin=document, prefix=prefix)
        assert result.exit_code == 0, result.output
    assert "version 2 (set by alice)" in result.output
    shown = run("show", "acme", prefix=prefix)
    assert json.loads(shown.output) == {"tenant": "acme", "version": "acme@2", "policy": {
        "mode": "loose", "fail_mode": "open", "unsafe_action": "block", "category_actions": {},
        "review_thresholds": {}, "too_long_action": "block", "unsafe_threshold": None, "languages": {},
        "review": {"store_text": False, "retention_days": 30}}}
    history = run("history", "acme", prefix=prefix).output.splitlines()
    assert [re.sub(r"/[0-9a-f]{16}:", "/N:", line).split(" set by")[0] for line in history] == [
        "@0 acme/1/N: version 1", "@1 acme/2/N: version 2",
        "@2 acme/1/N: tombstone of a superseded or refused record"]  # so the cleaner drops version 1
    settings = Settings.load({}, topic_prefix=prefix)

    async def count() -> int:
        return len([m async for m in records(settings, broker.bootstrap, "policies", idle_timeout_s=1.5)])

    assert asyncio.run(count()) == 3  # the refused ones were never sent


def test_a_running_client_takes_a_tenants_new_fail_mode_within_seconds(broker):
    settings = Settings.load({}, topic_prefix="pclient.", policy=Policy.model_validate({"default": {"fail_mode": "closed"}}))

    async def scenario() -> Action:
        await ensure_topics(settings.kafka, broker.bootstrap)  # as the workers do
        async with Guard(broker.bootstrap, settings) as guard:
            assert guard.is_fail_closed("initech")
            await set_policy(settings, broker.bootstrap, "initech", {"fail_mode": "open"}, "test")
            set_at = time.monotonic()
            while guard.is_fail_closed("initech"):
                assert time.monotonic() - set_at < 5, "the client still has the old fail mode"
                await asyncio.sleep(0.05)
            assert guard.is_fail_closed("globex")  # only the tenant named changed
            return guard.fail_mode("initech").action

    assert asyncio.run(scenario()) is Action.allow
