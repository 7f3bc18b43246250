"""A Ray cluster of `ray start` processes on this machine (a head, and optionally a second node),
for the scale-out test and the Ray link benchmark: the way a Kubernetes RayCluster runs, not the
in-process Ray that `ray.init()` starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from guardstream.dev.broker import free_port


@contextmanager
def ray_cluster(head_cpus: int, node_cpus: int = 0, keep_logs: Path | None = None) -> Iterator[tuple[str, str]]:
    """Yields the cluster's GCS address (for a driver on one of its nodes) and its Ray Client address
    (for a driver elsewhere, as a pod is in Kubernetes). Token authentication, when wanted, comes
    from the caller's RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH. Ended process by process, never
    `ray stop`, which would also end any other local Ray."""
    temp = tempfile.mkdtemp(prefix="gsray", dir="/tmp")  # short: Ray's socket paths live under it
    port, client_port = free_port(), free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    common = ["--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--disable-usage-stats"]
    nodes = [["--head", "--port", str(port), "--ray-client-server-port", str(client_port), "--num-cpus", str(head_cpus),
              "--include-dashboard", "false"]]
    if node_cpus:
        nodes.append(["--address", f"127.0.0.1:{port}", "--num-cpus", str(node_cpus)])
    try:
        for args in nodes:
            done = subprocess.run([ray, "start", *args, *common], capture_output=True, text=True, timeout=120)
            if done.returncode:
                raise RuntimeError(f"ray start {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"
    finally:
        ours = [p for p in psutil.process_iter(["cmdline"])
                if any(temp in a or f":{port}" in a or f"={client_port}" in a for a in p.info["cmdline"] or [])]
        for proc in ours + [c for p in ours for c in descendants(p)]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if keep_logs is not None:  # for a post-mortem
            shutil.copytree(Path(temp) / "session_latest" / "logs", keep_logs, dirs_exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    """Every process under `proc` (none once it is gone)."""
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
