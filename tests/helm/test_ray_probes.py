"""The chart's Ray head passes the probes KubeRay gives a Ray container that has none of its own.

KubeRay (ray-operator/controllers/ray/common/pod.go) starts the head as `ray start --head` with the
RayCluster's rayStartParams plus its defaults (`--block`, `--dashboard-agent-listen-port=52365`,
`--metrics-export-port=8080`), and probes it over HTTP: `/api/healthz` on the dashboard agent's
port for Ray ≥ 2.53; `/api/local_raylet_healthz` there and `/api/gcs_healthz` on the dashboard
for older ones. Without `ray[default]` the agent starts in minimal mode and answers none of them.
Here the head is started from the rendered chart's parameters and environment (token auth
included), with the packages `make install` put in .venv, on free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from guardstream.dev.broker import free_port

from tests.helm.test_chart import one, render
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""  # nothing listens: a failed probe


def test_the_ray_head_answers_kuberays_probes_and_fails_them_without_its_raylet(tmp_path):
    cluster = one(render(), "RayCluster", "guard-guardstream-ray")
    head = cluster["spec"]["headGroupSpec"]
    container = head["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["RAY_AUTH_MODE"] == "token" and "livenessProbe" not in container  # KubeRay's own probes apply
    token = tmp_path / "token"
    token.write_text(os.urandom(16).hex())
    gcs, dashboard, agent, metrics = (free_port() for _ in range(4))
    params = {**head["rayStartParams"], "port": gcs, "dashboard-port": dashboard,
              "dashboard-agent-listen-port": agent, "metrics-export-port": metrics}
    temp = tempfile.mkdtemp(prefix="rp-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
               *(f"--{k}={v}" for k, v in params.items()), f"--temp-dir={temp}"]
    ray = subprocess.Popen(command, env={**os.environ, **env, "RAY_AUTH_TOKEN_PATH": str(token)},
                           stdout=open(tmp_path / "ray.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    probes = {"healthz": f"http://127.0.0.1:{agent}/api/healthz",
              "local_raylet_healthz": f"http://127.0.0.1:{agent}/api/local_raylet_healthz",
              "gcs_healthz": f"http://127.0.0.1:{dashboard}/api/gcs_healthz"}
    try:
        eventually(lambda: get(probes["healthz"])[0] == 200 or ray.poll() is not None, 90, "the agent's answer")
        assert ray.poll() is None, (tmp_path / "ray.log").read_text()[-3000:]
        answers = {name: get(url) for name, url in probes.items()}
        assert all(status == 200 and "success" in body for status, body in answers.values()), answers
        raylets = [p for p in psutil.Process(ray.pid).children(recursive=True) if "raylet" in p.name()]
        assert raylets, "no raylet under the head"
        for raylet in raylets:
            raylet.send_signal(signal.SIGKILL)
        eventually(lambda: get(probes["healthz"])[0] != 200, 30, "the liveness probe to fail")
    finally:
        try:
            os.killpg(ray.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for leftover in psutil.process_iter(["cmdline"]):  # Ray's daemons leave the session group
            try:
                if temp in " ".join(leftover.info["cmdline"] or []):
                    leftover.kill()
            except psutil.Error:
                continue
        ray.wait(30)
        shutil.rmtree(temp, ignore_errors=True)
