"""SIGTERM and SIGINT end the CLI's processes through their cleanup, so no child outlives them."""

import os
import signal
import subprocess
import sys

import psutil
import pytest

from guardstream.dev.broker import free_port

from tests.helpers.waiting import eventually

CLEANUP = """
import sys, time
from guardstream.cli import exit_on_signals
exit_on_signals()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    open(sys.argv[1], "w").write("cleaned up")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_exit_on_signals_runs_cleanup_and_exits_with_the_signal_code(tmp_path, signum):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", CLEANUP, str(marker)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signum)
    assert proc.wait(10) == 128 + signum
    assert marker.read_text() == "cleaned up"


def brokers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "tansu" in p.name()]


@pytest.mark.parametrize("command", [["broker", "--port", "{port}"], ["up", "--agents", "enforcement"]])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_cli_stops_its_embedded_broker_on_a_signal(tmp_path, command, signum):
    """`up` is signalled while its worker is still starting: before Faust installs its own handlers."""
    env = {**os.environ, "GUARDSTREAM_HOME": str(tmp_path), "GUARDSTREAM_KAFKA_BOOTSTRAP": ""}
    args = [a.format(port=free_port()) for a in command]
    proc = subprocess.Popen([sys.executable, "-m", "guardstream.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        broker = eventually(lambda: brokers_of(proc.pid), 60, "the embedded broker", every_s=0.2)[0]
        proc.send_signal(signum)
        proc.wait(30)
        psutil.wait_procs([broker], timeout=15)
        assert not broker.is_running() or broker.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
