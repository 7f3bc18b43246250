"""SIGTERM and SIGINT end the CLI's processes through their cleanup, so no child outlives them."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import faust
import psutil
import pytest

from guardstream import signals
from guardstream.dev.broker import free_port
from guardstream.runtime import GracedWorker

from tests.helpers.waiting import eventually

CLEANUP = """
import sys, time
from guardstream.signals import exit_on_signals
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


SWALLOWED = """
import gc, os, signal, sys
from guardstream.signals import exit_on_signals, leave_if_signalled
exit_on_signals()

class Finalized:
    def __del__(self):  # CPython ignores what a finalizer raises: where a CI run's SIGTERM once landed
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))

Finalized()
gc.collect()
print("went on", flush=True)
leave_if_signalled()
"""


def test_a_signal_whose_exit_was_ignored_where_it_landed_still_ends_the_start():
    done = subprocess.run([sys.executable, "-c", SWALLOWED], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" in done.stderr and "SystemExit" in done.stderr, done.stderr  # as in the CI run
    assert done.stdout.strip() == "went on" and done.returncode == 128 + signal.SIGTERM


def brokers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "tansu" in p.name()]


def start_cli(tmp_path, args: list[str], **env) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "cli.log"
    env = {**os.environ, "GUARDSTREAM_HOME": str(tmp_path), "GUARDSTREAM_KAFKA_BOOTSTRAP": "", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "guardstream.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def ended(proc: subprocess.Popen, log: Path, within_s: float) -> int:
    try:
        return proc.wait(within_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {within_s:.0f}s after the signal; its log ends:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("command", [["broker", "--port", "{port}"], ["up", "--agents", "enforcement"]])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_cli_stops_its_embedded_broker_on_a_signal(tmp_path, command, signum):
    """`up` is signalled while its worker is still starting: before Faust installs its own handlers."""
    proc, log = start_cli(tmp_path, [a.format(port=free_port()) for a in command])
    try:
        broker = eventually(lambda: brokers_of(proc.pid), 60, "the embedded broker", every_s=0.2)[0]
        proc.send_signal(signum)
        ended(proc, log, 60)  # a stop is bounded by shutdown_grace_s (30 s), then the broker's own stop
        psutil.wait_procs([broker], timeout=15)
        assert not broker.is_running() or broker.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_stop_that_hangs_on_the_broker_ends_after_the_grace_and_takes_the_broker_with_it(tmp_path):
    """The broker stops answering (SIGSTOP) while the worker joins its group, and the worker is
    signalled: Faust's stop waits on the join; past shutdown_grace_s the worker ends the broker and
    exits with code 1."""
    proc, log = start_cli(tmp_path, ["up", "--agents", "enforcement"], GUARDSTREAM_SHUTDOWN_GRACE_S="3")
    try:
        broker = eventually(lambda: brokers_of(proc.pid), 60, "the embedded broker", every_s=0.2)[0]
        eventually(lambda: "joining group" in log.read_text(), 90, "the worker's join", every_s=0.05)  # Tansu: 5 s
        broker.suspend()
        proc.send_signal(signal.SIGTERM)
        assert ended(proc, log, 40) == 1  # 3 s of grace, then up to 10 s for the broker to take SIGTERM, then SIGKILL
        assert "still stopping 3s after the signal" in log.read_text()
        psutil.wait_procs([broker], timeout=15)
        assert not broker.is_running() or broker.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration  # three JVMs
def test_broker_kafka_prints_its_nodes_then_ready_and_sigterm_stops_every_node(tmp_path):
    """`guardstream broker --kafka --nodes 3`: a line per node (`node <id> port <port> pid <pid>`),
    then `broker ready <bootstrap>`; SIGTERM ends every node's JVM."""
    proc = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "broker", "--kafka", "--nodes", "3"],
                            env={**os.environ, "GUARDSTREAM_KAFKA_BOOTSTRAP": "", "GUARDSTREAM_TOPIC_PREFIX": "cli."},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(4)]
        nodes = [line.split() for line in lines[:3]]
        assert [(n[0], n[1], n[2], n[4]) for n in nodes] == [("node", str(i), "port", "pid") for i in (1, 2, 3)], lines
        assert lines[3] == "broker ready " + ",".join(f"127.0.0.1:{n[3]}" for n in nodes)
        jvms = [psutil.Process(int(n[5])) for n in nodes]
        assert all(j.is_running() and "kafka.Kafka" in j.cmdline() for j in jvms)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        psutil.wait_procs(jvms, timeout=15)
        assert not any(j.is_running() and j.status() != psutil.STATUS_ZOMBIE for j in jvms)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_signal_that_came_before_faust_s_handlers_stops_the_worker_once_they_are_in(monkeypatch):
    """Between the last `leave_if_signalled` and mode's handlers, a signal's SystemExit may still be
    ignored where it lands: the worker acts on the remembered signal when it installs them."""
    stopped = []

    class Worker(GracedWorker):
        def stop_as_signalled(self, signum):
            stopped.append(signum)

    loop = asyncio.new_event_loop()
    worker = Worker(faust.App("signals-probe", broker="kafka://127.0.0.1:1"), 1.0, (), loglevel="warning",
                    redirect_stdouts=False, override_logging=False, loop=loop)
    try:
        worker.install_signal_handlers()
        assert stopped == []  # nothing arrived
        monkeypatch.setattr(signals, "_signalled", [signal.SIGTERM])
        worker.install_signal_handlers()
        assert stopped == [signal.SIGTERM]
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            loop.remove_signal_handler(signum)
        loop.close()
