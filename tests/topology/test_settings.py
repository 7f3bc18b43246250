import pytest

from guardstream.topology.settings import Settings
from guardstream.wire.settings import TANSU_CLUSTER_ID, TANSU_FETCH_WAIT_MS, GatewaySettings, SettingsError
from guardstream.workers.pools.specs import GenSpec, PoolSpec, StreamSpec


def test_environment_is_read_and_flags_win():
    env = {"GUARDSTREAM_KAFKA_BOOTSTRAP": "kafka:9092", "GUARDSTREAM_GEN_ACTORS": "3", "GUARDSTREAM_TOPIC_PREFIX": "x."}
    s = Settings.load(env, gen_actors=5, ray_address=None)
    assert (s.kafka.bootstrap, s.gen.actors, s.kafka.topic_prefix, s.pool.ray_address) == ("kafka:9092", 5, "x.", None)


def test_policy_comes_from_the_environment_as_json():
    s = Settings.load({"GUARDSTREAM_POLICY": '{"tenants": {"a": {"mode": "loose"}}}'})
    assert s.policy.tenants["a"].mode == "loose" and s.policy.default.mode == "strict"


def test_invalid_settings_name_the_field_and_point_to_help():
    with pytest.raises(SettingsError, match=r"gen_actors: .*greater than or equal to 1.*guardstream worker --help"):
        Settings.load({"GUARDSTREAM_GEN_ACTORS": "0"})
    with pytest.raises(SettingsError, match="kafka_security_protocol"):
        Settings.load({}, kafka_security_protocol="CARRIER_PIGEON")


def test_sasl_options_reach_the_kafka_clients():
    s = Settings.load({}, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                      kafka_sasl_username="u", kafka_sasl_password="p")
    assert s.kafka.client_options() == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                        "sasl_plain_username": "u", "sasl_plain_password": "p"}


def test_audit_defaults_to_sqlite_under_home(tmp_path):
    assert Settings.load({}, home=tmp_path).audit_target() == f"sqlite:///{tmp_path / 'audit.sqlite'}"
    assert Settings.load({"GUARDSTREAM_AUDIT_URL": "postgresql://db/x"}).audit_target() == "postgresql://db/x"


def test_a_worker_runs_all_agents_or_the_ones_named():
    assert Settings.load({}).agents == {"gen", "stream", "enforcement", "audit", "review", "analytics", "canary"}
    assert not Settings.load({}).runs_canary  # the canary agent runs only where a canary is set
    assert Settings.load({"GUARDSTREAM_AGENTS": "gen, audit"}).agents == {"gen", "audit"}
    assert Settings.load({}, agents="stream").agents == {"stream"}
    with pytest.raises(SettingsError, match="agents"):
        Settings.load({"GUARDSTREAM_AGENTS": "gen,billing"})
    with pytest.raises(SettingsError, match="name at least one"):
        Settings.load({"GUARDSTREAM_AGENTS": ","})


def test_flat_names_fill_the_parts_and_code_reads_the_parts():
    s = Settings.load({"GUARDSTREAM_STREAM_DEBOUNCE": "3", "GUARDSTREAM_POLICY": '{"default": {"mode": "loose"}}',
                       "GUARDSTREAM_DEVICE": "cuda", "GUARDSTREAM_POOL": "join", "GUARDSTREAM_RAY_ADDRESS": "ray:1"},
                      max_event_bytes=4096, audit_store_text=True, stream_gap_timeout_s=7, gen_batch_size=8)
    assert (s.stream.debounce, s.stream.gap_timeout_s, s.gen.batch_size, s.gen.device) == (3, 7, 8, "cuda")
    assert (s.pool.mode, s.pool.ray_address, s.sinks.audit_store_text, s.max_event_bytes) == ("join", "ray:1", True, 4096)
    assert s.policy.default.mode == "loose"
    assert s.stream.device == "cuda"  # unless set, the Stream actors use Gen's device
    assert Settings.load({}, device="cuda", stream_device="cpu").stream.device == "cpu"
    with pytest.raises(SettingsError, match="unknown setting 'gen_actor'"):
        Settings.load({}, gen_actor=2)


def test_settings_read_the_process_environment_through_pydantic_settings(monkeypatch):
    monkeypatch.setenv("GUARDSTREAM_GEN_ACTORS", "3")
    monkeypatch.setenv("GUARDSTREAM_KAFKA_BOOTSTRAP", "kafka:9092")
    assert Settings().gen.actors == 3 and Settings(agents="gen").agents == {"gen"}
    assert GatewaySettings().kafka.bootstrap == "kafka:9092"  # what a gateway reads, without the worker's parts
    assert Settings.load({}).gen.actors == 1  # an explicit environment is the only one read


def test_a_pool_is_made_from_the_parts_without_how_callers_call_it():
    s = Settings.load({}, gen_model="g", gen_actors=2, gen_call_timeout_s=7, stream_model="s", stream_debounce=5)
    spec = PoolSpec(gen=s.gen, stream=s.stream)
    assert type(spec.gen) is GenSpec and type(spec.stream) is StreamSpec
    assert (spec.gen.model, spec.gen.actors, spec.stream.model) == ("g", 2, "s")
    assert spec == PoolSpec(gen=Settings.load({}, gen_model="g", gen_actors=2).gen, stream=s.stream.model_copy(
        update={"debounce": 2}))  # a pool is the same whatever its callers' timeouts and debounce


def test_a_canary_names_a_model_and_takes_its_own_pool():
    settings = Settings.load({"GUARDSTREAM_CANARY": '{"stream_model": "s2", "sample": 0.1, "actor_cpus": 2}'}, app_id="app")
    assert settings.runs_canary and not Settings.load({}, canary={"gen_model": "g2"}, agents="gen").runs_canary
    pool = settings.canary_pool_settings()
    assert (pool.kafka.app_id, pool.agents, pool.stream.model, pool.stream.actors, pool.stream.actor_cpus) == \
        ("app-canary", {"stream"}, "s2", 1, 2)
    assert settings.canary_group == "guard.app-canary"
    with pytest.raises(SettingsError, match="names gen_model, stream_model or both"):
        Settings.load({"GUARDSTREAM_CANARY": '{"sample": 0.1}'})
    with pytest.raises(SettingsError, match="GUARDSTREAM_CANARY is not JSON"):
        Settings.load({"GUARDSTREAM_CANARY": "gen_model=x"})


def test_a_worker_on_tansu_polls_often_unless_told_otherwise():
    """Tansu answers a fetch at the end of its wait; Kafka as soon as a record arrives."""
    default = Settings.load({})
    assert default.for_broker("kafka-cluster-id") == default and default.kafka.broker_kind == "kafka"
    assert default.for_broker(TANSU_CLUSTER_ID).kafka.fetch_max_wait_ms == TANSU_FETCH_WAIT_MS
    assert default.for_broker(TANSU_CLUSTER_ID).kafka.broker_kind == "tansu"
    chosen = Settings.load({"GUARDSTREAM_KAFKA_FETCH_MAX_WAIT_MS": "300"})
    assert chosen.for_broker(TANSU_CLUSTER_ID).kafka.fetch_max_wait_ms == 300
