"""A `guardstream worker` in its own process, for the demo, the pipeline benchmark and the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from guardstream.topology.settings import Settings

READY_LINE = "Worker ready"  # Faust logs it once the agents are started


class WorkerStartError(RuntimeError):
    pass


class WorkerProcess:
    def __init__(self, bootstrap: str, log_path: Path, *args: str, **env_settings: object):
        """Extra CLI `args` and `GUARDSTREAM_*` settings (`app_id="x"` → GUARDSTREAM_APP_ID=x). The
        worker's data directory (its table stores) is next to its log unless they name one."""
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1",
                    **{f"GUARDSTREAM_{k.upper()}": str(v) for k, v in env_settings.items()}}
        # its own data directory, as each pod has: two workers' table stores never share a disk
        self.env.setdefault("GUARDSTREAM_DATA_DIR", str(log_path.with_name(log_path.stem + "-data")))
        self.settings = Settings.load(self.env)
        self.bootstrap, self.log_path = bootstrap, log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "worker", "--bootstrap",
                                             bootstrap, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 240) -> WorkerProcess:
        deadline = time.monotonic() + timeout_s
        while READY_LINE not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise WorkerStartError(f"the worker did not become ready within {timeout_s:.0f}s; "
                                       f"its log ({self.log_path}) ends with:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
