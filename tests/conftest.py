"""Fixtures for every test folder. `tiny` builds the fixture checkpoints; the rest are the real parts
of the integration tests (marked `integration`): a one-node Apache Kafka over TCP (the embedded
Tansu only where a test says so), a fresh PostgreSQL database and a `guardstream worker` process
with local Ray, each started once per session and only when a test asks for it."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

import psycopg
import pytest
import torch

from guardstream.dev.broker import free_port
from guardstream.dev.kafka import KafkaCluster
from guardstream.dev.tiny_checkpoints import TinyCheckpoints, build_tiny_checkpoints
from tests.helpers.pipeline import PG_ADMIN_URL, POLICY, start_worker

REAL_PARTS = {"broker", "pg_url", "worker"}
# The session's shared worker and broker end once this process has no test left that uses them:
# left idle, they and the worker's Ray cost a fifth of a core for the rest of the run.
SHARED = ("worker", "broker")  # stopped in this order: the worker uses the broker
STARTED: dict[str, Callable[[], None]] = {}  # a shared part started in this process -> what stops it
FILE_POSITION: dict[str, int] = {}  # test file -> its place in the run
LAST_FILE_USING: dict[str, int] = {}  # shared part -> the place of the last file that uses it

if os.environ.get("PYTEST_XDIST_WORKER"):  # two test processes on two cores: one torch thread each, not two
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """A test that uses a real part must say so, so that `make unit` (-m "not integration") never starts one.

    For `make test`'s two processes (pytest-xdist, `--dist loadfile`, files in this order): the
    files of the session's shared worker come first, then the other integration tests, so that the
    long ones start early and the short unit modules even out the end."""
    for item in items:
        if REAL_PARTS & set(item.fixturenames) and item.get_closest_marker("integration") is None:
            raise pytest.UsageError(f"{item.nodeid} uses {sorted(REAL_PARTS & set(item.fixturenames))} "
                                    f"but is not marked integration (pytestmark = pytest.mark.integration)")
    items.sort(key=lambda item: 0 if "worker" in item.fixturenames else 1 if item.get_closest_marker("integration") else 2)
    FILE_POSITION.update((file, place) for place, file in enumerate(dict.fromkeys(map(file_of, items))))
    for part in SHARED:
        LAST_FILE_USING[part] = max((FILE_POSITION[file_of(i)] for i in items if part in i.fixturenames), default=-1)


def file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_runtest_setup(item):
    """Stop the shared parts no later test of this process uses. A process runs whole files in the
    order above (xdist's loadfile hands them out in it), so no file after the last one that uses a
    part can come to it."""
    place = FILE_POSITION.get(file_of(item), -1)
    for part in SHARED:
        if part in STARTED and place > LAST_FILE_USING[part]:
            STARTED.pop(part)()


@pytest.fixture(scope="session")
def tiny() -> TinyCheckpoints:
    """The fixture checkpoints (built once per machine, about two minutes, then cached)."""
    return build_tiny_checkpoints()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """Apache Kafka, one node (the settings for tests: guardstream/dev/kafka.py, TEST_BROKER_CONFIG)."""
    with KafkaCluster(directory=tmp_path_factory.mktemp("kafka")) as kafka:
        STARTED["broker"] = kafka.stop
        yield kafka


@pytest.fixture(scope="session")
def pg_url():
    name = f"guardstream_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is needed at {PG_ADMIN_URL} (set GUARDSTREAM_TEST_PG to another): {exc}")
    admin.execute(f"CREATE DATABASE {name}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def worker(broker, tiny, pg_url, tmp_path_factory):
    """One worker for the session: strict default policy, loose `globex`, audit into PostgreSQL."""
    running = start_worker(broker.bootstrap, str(tiny.gen), tmp_path_factory.mktemp("worker") / "worker.log",
                           app_id="gs-it", topic_prefix="it.", audit_url=pg_url, policy=json.dumps(POLICY),
                           audit_store_text="false", metrics_port=free_port())
    STARTED["worker"] = running.stop
    yield running
    running.stop()
