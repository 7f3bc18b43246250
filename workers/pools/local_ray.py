"""The local Ray a worker starts for itself, and what a SIGKILLed predecessor left of its own.

Ray's per-node agents outlive a driver killed with SIGKILL (they are re-parented to init and
keep running). Each worker records its local Ray's processes in a file under its home, one per
app id; the next worker of that app ends what is still alive of them before it starts its own.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import psutil
import ray

log = logging.getLogger(__name__)


def _record_path(home: Path, app_id: str) -> Path:
    return home / "local-ray" / f"{app_id}.json"


def reap_leftovers(home: Path, app_id: str) -> int:
    """End the processes of a previous worker's local Ray, if that worker is gone; returns how many."""
    path = _record_path(home, app_id)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    if psutil.pid_exists(record["driver"]) and record["driver"] != os.getpid():
        return 0  # that worker still runs (or its pid was taken over by a live process): leave it be
    ended = 0
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            mine = (proc.info["pid"], proc.info["create_time"]) in {tuple(p) for p in record["processes"]}
            agent = proc.info["create_time"] >= record["started"] and \
                proc.environ().get("RAY_RAYLET_PID") == str(record["raylet"])
            if mine or agent:
                proc.send_signal(signal.SIGKILL)
                ended += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    path.unlink(missing_ok=True)
    if ended:
        log.warning("ended %d processes left by a previous worker's local Ray (app %s)", ended, app_id)
    return ended


def record_processes(home: Path, app_id: str) -> None:
    """Remember this worker's local Ray processes (call once its actors are up)."""
    me = psutil.Process()
    children = me.children(recursive=True)
    raylets = [p.pid for p in children if "raylet" in p.name()]
    path = _record_path(home, app_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"driver": me.pid, "started": me.create_time(), "raylet": raylets[0] if raylets else None,
                                "processes": [[p.pid, p.create_time()] for p in children]}))


def start_local_ray(num_cpus: int, home: Path, app_id: str) -> None:
    reap_leftovers(home, app_id)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
