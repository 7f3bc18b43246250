"""`serve`'s settings: a gateway's and its endpoint's, from GUARDSTREAM_SERVE_* under its flags."""

import pytest
from click.testing import CliRunner

from guardstream.callers import Limits
from guardstream.cli import main
from guardstream.serve_settings import ServeSettings
from guardstream.wire.settings import SettingsError


def test_the_endpoint_reads_its_part_and_no_worker_setting():
    s = ServeSettings.load({"GUARDSTREAM_SERVE_PORT": "9000", "GUARDSTREAM_SERVE_RATE": "5/minute",
                            "GUARDSTREAM_GEN_ACTORS": "not a number"},  # a worker's, beside it: not serve's to read
                           serve_host="0.0.0.0", kafka_bootstrap="kafka:9092")
    assert (s.serve.host, s.serve.port, s.serve.timeout_s, s.kafka.bootstrap) == ("0.0.0.0", 9000, 5, "kafka:9092")
    assert s.serve.limits() == Limits(rate="5/minute")
    with pytest.raises(SettingsError, match="serve_rate"):
        ServeSettings.load({}, serve_rate="fast")


def test_the_environment_reaches_the_command_and_its_flags_win(monkeypatch):
    monkeypatch.delenv("GUARDSTREAM_API_KEYS", raising=False)
    monkeypatch.setenv("GUARDSTREAM_SERVE_HOST", "0.0.0.0")
    result = CliRunner().invoke(main, ["serve", "--bootstrap", "x:1", "--insecure-no-auth"])
    assert result.exit_code == 2 and "loopback" in result.output and "0.0.0.0" in result.output
    monkeypatch.setenv("GUARDSTREAM_SERVE_PORT", "0")
    result = CliRunner().invoke(main, ["serve", "--bootstrap", "x:1", "--insecure-no-auth", "--host", "127.0.0.1"])
    assert result.exit_code == 2 and "serve_port" in result.output  # the environment's port, refused by name
