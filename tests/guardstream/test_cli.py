import json

from click.testing import CliRunner

from guardstream.cli import main


def test_schemas_export_writes_files(tmp_path):
    result = CliRunner().invoke(main, ["schemas", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "VerdictEvent.schema.json" in written and len(written) == 6
    assert json.loads((tmp_path / "out" / "DeadLetter.schema.json").read_text())["title"] == "DeadLetter"


def test_worker_without_kafka_says_what_to_do(monkeypatch):
    monkeypatch.delenv("GUARDSTREAM_KAFKA_BOOTSTRAP", raising=False)
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == 2
    assert "pass --bootstrap HOST:PORT or set GUARDSTREAM_KAFKA_BOOTSTRAP" in result.output


def test_bad_policy_and_bad_settings_are_usage_errors(monkeypatch):
    result = CliRunner().invoke(main, ["worker", "--bootstrap", "x:1", "--policy", '{"default": {"mode": "medium"}}'])
    assert result.exit_code == 2 and "--policy" in result.output
    monkeypatch.setenv("GUARDSTREAM_GEN_ACTORS", "zero")
    result = CliRunner().invoke(main, ["worker", "--bootstrap", "x:1"])
    assert result.exit_code == 2 and "gen_actors" in result.output


def test_pool_without_a_ray_cluster_says_what_to_do(monkeypatch):
    monkeypatch.delenv("GUARDSTREAM_RAY_ADDRESS", raising=False)
    result = CliRunner().invoke(main, ["pool", "--app-id", "guard"])
    assert result.exit_code == 2 and "pass --ray-address" in result.output
