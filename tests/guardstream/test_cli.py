import json

from click.testing import CliRunner

from guardstream.cli import main


def test_schemas_export_writes_files(tmp_path):
    result = CliRunner().invoke(main, ["schemas", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "VerdictEvent.schema.json" in written and len(written) == 8
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


def test_serve_needs_keys_and_serves_without_them_only_on_loopback(monkeypatch):
    monkeypatch.delenv("GUARDSTREAM_API_KEYS", raising=False)
    result = CliRunner().invoke(main, ["serve", "--bootstrap", "x:1"])
    assert result.exit_code == 2 and "guardstream keys new" in result.output
    result = CliRunner().invoke(main, ["serve", "--bootstrap", "x:1", "--insecure-no-auth", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "loopback" in result.output
    result = CliRunner().invoke(main, ["serve", "--bootstrap", "x:1", "--api-keys", '{"keys": [{"name": "k"}]}'])
    assert result.exit_code == 2 and "--api-keys" in result.output


def test_keys_new_prints_a_key_once_and_an_entry_that_holds_its_hash_only():
    from guardstream.callers import ApiKeys

    result = CliRunner().invoke(main, ["keys", "new", "--tenant", "acme", "--tenant", "acme-eu"])
    assert result.exit_code == 0, result.output
    key = next(word for word in result.stderr.split() if word.startswith("gsk-"))
    entry = json.loads(result.stdout)
    assert key not in result.stdout and entry["name"] == "acme" and entry["tenants"] == ["acme", "acme-eu"]
    assert ApiKeys.model_validate({"keys": [entry]}).find(key).tenants == ["acme", "acme-eu"]
    bad = CliRunner().invoke(main, ["keys", "new", "--tenant", "not a tenant"])
    assert bad.exit_code == 2 and "tenants" in bad.output


def test_a_reviewer_key_has_a_name_and_the_console_says_what_it_lacks(monkeypatch):
    from guardstream.callers import ApiKeys

    result = CliRunner().invoke(main, ["keys", "new", "--review", "--tenant", "acme", "--name", "ann"])
    assert result.exit_code == 0, result.output
    key = next(word for word in result.stderr.split() if word.startswith("gsr-"))
    assert "GUARDSTREAM_REVIEW_KEYS" in result.stderr
    assert ApiKeys.model_validate({"keys": [json.loads(result.stdout)]}).find(key).name == "ann"
    unnamed = CliRunner().invoke(main, ["keys", "new", "--review", "--tenant", "acme"])
    assert unnamed.exit_code == 2 and "--name" in unnamed.output

    for name in ("GUARDSTREAM_REVIEW_KEYS", "GUARDSTREAM_AUDIT_URL", "GUARDSTREAM_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    serve = ["review", "serve", "--bootstrap", "x:1"]
    result = CliRunner().invoke(main, [*serve, "--audit-url", "sqlite:///a.db"])
    assert result.exit_code == 2 and "PostgreSQL" in result.output
    result = CliRunner().invoke(main, [*serve, "--audit-url", "postgresql://h/db"])
    assert result.exit_code == 2 and "keys new --review" in result.output
    result = CliRunner().invoke(main, [*serve, "--audit-url", "postgresql://h/db", "--keys", '{"keys": []}'])
    assert result.exit_code == 2 and "--keys" in result.output
