"""The ACL set itself: who may write what (the integration test applies it to a real broker)."""

from click.testing import CliRunner
import yaml

from guardstream.cli import main
from guardstream.topology.acls import ROLES, acl_set, kafka_acls_lines, strimzi_users
from guardstream.topology.settings import Settings


def writers(settings: Settings, topic: str) -> set[str]:
    return {a.role for a in acl_set(settings) if a.resource == "topic" and a.name == topic and a.operation == "Write"}


def test_only_the_policy_admin_writes_policies_and_only_workers_write_what_is_enforced():
    settings = Settings.load({}, topic_prefix="p.")
    assert writers(settings, "p.policies") == {"policy-admin"}
    assert writers(settings, "p.verdicts") == writers(settings, "p.actions") == writers(settings, "p.replies") == {"worker"}
    assert writers(settings, "p.conversations") == writers(settings, "p.chunks") == {"gateway"}
    assert writers(settings, "p.review-decisions") == {"reviewer"}  # the console: enforcement follows what it writes
    assert {a.operation for a in acl_set(settings) if a.role == "reviewer"} == {"Write", "Describe"}
    assert not [a for a in acl_set(settings) if a.role == "sink" and a.operation != "Read" and a.operation != "Describe"]
    prefixed = {a.name for a in acl_set(settings) if a.pattern == "prefixed" and a.role == "worker"}
    assert prefixed == {settings.kafka.group_id}  # its changelogs, groups and re-keyed topic: nothing else by prefix


def test_the_set_prints_as_kafka_acls_lines_and_strimzi_users():
    settings = Settings.load({}, topic_prefix="p.")
    lines = kafka_acls_lines(settings, {role: f"User:{role}" for role in ROLES})
    assert len(lines) == len(acl_set(settings))
    assert "--allow-principal User:policy-admin --operation Write --topic p.policies" in "\n".join(lines)
    users = strimzi_users(settings, {role: f"gs-{role}" for role in ROLES}, "kc")
    assert [u["metadata"]["name"] for u in users] == [f"gs-{role}" for role in ROLES]
    assert sum(len(entry["operations"]) for u in users for entry in u["spec"]["authorization"]["acls"]) == len(acl_set(settings))
    admin = next(u for u in users if u["metadata"]["name"] == "gs-policy-admin")["spec"]["authorization"]["acls"]
    assert admin == [{"resource": {"type": "topic", "name": "p.policies", "patternType": "literal"},
                      "operations": ["Read", "Write", "Describe", "DescribeConfigs"]}]
    printed = CliRunner().invoke(main, ["acls", "--format", "strimzi", "--user", "worker=w1"],
                                 env={"GUARDSTREAM_TOPIC_PREFIX": "p."})
    assert printed.exit_code == 0 and list(yaml.safe_load_all(printed.output))[0]["metadata"]["name"] == "w1"
    assert CliRunner().invoke(main, ["acls", "--user", "wizard=x"]).exit_code == 2


def test_deploying_md_gives_the_set_that_guardstream_acls_prints():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "deploying.md").read_text()
    documented = [line for line in text.splitlines() if line.startswith("kafka-acls.sh ")]
    assert documented == kafka_acls_lines(Settings.load({}), {role: f"User:guardstream-{role}" for role in ROLES})
