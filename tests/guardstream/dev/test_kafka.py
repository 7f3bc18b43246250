"""Apache Kafka's jars are exactly the pinned ones, and the brokers' settings are what the tests rely on."""

import hashlib
import uuid

import pytest

from guardstream.dev import kafka
from guardstream.dev.kafka import KafkaCluster, verify


def test_a_missing_extra_or_altered_jar_is_found(tmp_path, monkeypatch):
    libs, pins = tmp_path / "libs", tmp_path / "pins"
    libs.mkdir()
    pins.mkdir()
    (libs / "a.jar").write_bytes(b"a")
    (libs / "b.jar").write_bytes(b"b")
    (pins / "9.9.9.sha256").write_text(f"{hashlib.sha256(b'a').hexdigest()}  a.jar\n"
                                       f"{hashlib.sha256(b'b').hexdigest()}  b.jar\n")
    monkeypatch.setattr(kafka, "JARS", pins)
    monkeypatch.setitem(kafka.RELEASES, "9.9.9", [])
    assert verify(libs, "9.9.9") == []
    (libs / "b.jar").write_bytes(b"tampered")
    (libs / "c.jar").write_bytes(b"c")
    (libs / "a.jar").unlink()
    assert verify(libs, "9.9.9") == ["missing a.jar", "not pinned: c.jar", "sha256 differs: b.jar"]


def test_every_pinned_release_lists_its_jars():
    for version in kafka.RELEASES:
        assert len(kafka.pinned(version)) > 30 and f"kafka_2.13-{version}.jar" in kafka.pinned(version)


def test_three_nodes_replicate_in_three_and_need_two_in_sync(tmp_path):
    one, three = KafkaCluster(directory=tmp_path / "1"), KafkaCluster(nodes=3, directory=tmp_path / "3")
    assert (one.config["default.replication.factor"], one.config["min.insync.replicas"]) == (1, 1)
    assert (three.config["default.replication.factor"], three.config["min.insync.replicas"]) == (3, 2)
    assert three.config["offsets.topic.replication.factor"] == 3 and len(three.bootstrap.split(",")) == 3
    assert "group.initial.rebalance.delay.ms=0" in one._properties(one.nodes[0])
    secured = KafkaCluster(directory=tmp_path / "s", users={kafka.SUPER_USER: "pw", "worker": "w"})
    properties = secured._properties(secured.nodes[0])
    assert "listeners=SASL_SSL://127.0.0.1:" in properties and "allow.everyone.if.no.acl.found=false" in properties


@pytest.mark.integration  # a JVM
def test_a_cluster_id_that_begins_with_a_dash_still_formats(tmp_path, monkeypatch):
    """base64 ids begin with "-" one time in 64: the storage tool must not read one as an option."""
    dash = uuid.UUID(bytes=bytes([0xFB]) + bytes(15))  # urlsafe base64: "-wAAAA..."
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: dash)
    with KafkaCluster(directory=tmp_path / "kafka") as cluster:
        assert cluster.nodes[0].running()
