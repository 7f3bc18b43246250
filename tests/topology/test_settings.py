import pytest

from guardstream.topology.settings import TANSU_CLUSTER_ID, TANSU_FETCH_WAIT_MS, Settings, SettingsError
from guardstream.workers.moderation.rules import GenRules, StreamRules


def test_environment_is_read_and_flags_win():
    env = {"GUARDSTREAM_KAFKA_BOOTSTRAP": "kafka:9092", "GUARDSTREAM_GEN_ACTORS": "3", "GUARDSTREAM_TOPIC_PREFIX": "x."}
    s = Settings.load(env, gen_actors=5, ray_address=None)
    assert (s.kafka_bootstrap, s.gen_actors, s.topic_prefix, s.ray_address) == ("kafka:9092", 5, "x.", None)


def test_policy_comes_from_the_environment_as_json():
    s = Settings.load({"GUARDSTREAM_POLICY": '{"tenants": {"a": {"mode": "loose"}}}'})
    assert s.policy.for_tenant("a").mode == "loose" and s.policy.for_tenant("b").mode == "strict"


def test_invalid_settings_name_the_field_and_point_to_help():
    with pytest.raises(SettingsError, match=r"gen_actors: .*greater than or equal to 1.*guardstream worker --help"):
        Settings.load({"GUARDSTREAM_GEN_ACTORS": "0"})
    with pytest.raises(SettingsError, match="kafka_security_protocol"):
        Settings.load({}, kafka_security_protocol="CARRIER_PIGEON")


def test_sasl_options_reach_the_kafka_clients():
    s = Settings.load({}, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                      kafka_sasl_username="u", kafka_sasl_password="p")
    assert s.kafka_client_options() == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                        "sasl_plain_username": "u", "sasl_plain_password": "p"}


def test_audit_defaults_to_sqlite_under_home(tmp_path):
    assert Settings.load({}, home=tmp_path).audit_target() == f"sqlite:///{tmp_path / 'audit.sqlite'}"
    assert Settings.load({"GUARDSTREAM_AUDIT_URL": "postgresql://db/x"}).audit_target() == "postgresql://db/x"


def test_a_worker_runs_all_agents_or_the_ones_named():
    assert Settings.load({}).agents == {"gen", "stream", "enforcement", "audit", "analytics", "canary"}
    assert not Settings.load({}).runs_canary  # the canary agent runs only where a canary is set
    assert Settings.load({"GUARDSTREAM_AGENTS": "gen, audit"}).agents == {"gen", "audit"}
    assert Settings.load({}, agents="stream").agents == {"stream"}
    with pytest.raises(SettingsError, match="agents"):
        Settings.load({"GUARDSTREAM_AGENTS": "gen,billing"})
    with pytest.raises(SettingsError, match="name at least one"):
        Settings.load({"GUARDSTREAM_AGENTS": ","})


def test_each_moderation_step_gets_its_own_settings_and_nothing_else():
    s = Settings.load({"GUARDSTREAM_STREAM_DEBOUNCE": "3", "GUARDSTREAM_POLICY": '{"default": {"mode": "loose"}}'},
                      max_event_bytes=4096, audit_store_text=True, stream_gap_timeout_s=7, stream_max_held_chunks=9,
                      stream_max_tokens=99)
    assert s.gen_rules() == GenRules(policy=s.policy, max_event_bytes=4096, store_text=True)
    assert s.stream_rules() == StreamRules(policy=s.policy, max_event_bytes=4096, debounce=3, gap_timeout_s=7,
                                           max_held_chunks=9, max_tokens=99)
    assert s.stream_rules().policy.default.mode == "loose"


def test_a_canary_names_a_model_and_takes_its_own_pool():
    settings = Settings.load({"GUARDSTREAM_CANARY": '{"stream_model": "s2", "sample": 0.1, "actor_cpus": 2}'}, app_id="app")
    assert settings.runs_canary and not Settings.load({}, canary={"gen_model": "g2"}, agents="gen").runs_canary
    pool = settings.canary_pool_settings()
    assert (pool.app_id, pool.agents, pool.stream_model, pool.stream_actors, pool.stream_actor_cpus) == \
        ("app-canary", {"stream"}, "s2", 1, 2)
    assert settings.canary_group == "guard.app-canary"
    with pytest.raises(SettingsError, match="names gen_model, stream_model or both"):
        Settings.load({"GUARDSTREAM_CANARY": '{"sample": 0.1}'})
    with pytest.raises(SettingsError, match="GUARDSTREAM_CANARY is not JSON"):
        Settings.load({"GUARDSTREAM_CANARY": "gen_model=x"})


def test_a_worker_on_tansu_polls_often_unless_told_otherwise():
    """Tansu answers a fetch at the end of its wait; Kafka as soon as a record arrives."""
    default = Settings.load({})
    assert default.for_broker("kafka-cluster-id") == default and default.broker_kind == "kafka"
    assert default.for_broker(TANSU_CLUSTER_ID).kafka_fetch_max_wait_ms == TANSU_FETCH_WAIT_MS
    assert default.for_broker(TANSU_CLUSTER_ID).broker_kind == "tansu"
    chosen = Settings.load({"GUARDSTREAM_KAFKA_FETCH_MAX_WAIT_MS": "300"})
    assert chosen.for_broker(TANSU_CLUSTER_ID).kafka_fetch_max_wait_ms == 300
