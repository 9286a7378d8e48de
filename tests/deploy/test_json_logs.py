"""``FAILOVER_LOG_JSON=true``: a real worker started the way the manifests start it (``failoverctl
worker``) writes nothing but JSON lines, from its very first line (Celery's warnings, its banner) to
its shutdown notices; so does the watcher (``failoverctl watcher``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.stack import SANDBOX_RUN_KEY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_a_json_worker_writes_only_json_lines_from_start_to_shutdown(
    redis_server_url: str, real_redis: redis.Redis, prefix: str, dynamodb_endpoint: str, tmp_path: Path
) -> None:
    queue = prefix.rstrip(":")  # its keys are removed by real_redis after the test
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FAILOVER_LOG_JSON": "true",
        "FAILOVER_REDIS_URL": redis_server_url,
        "FAILOVER_QUEUE": queue,
        "FAILOVER_KEY_PREFIX": f"{queue}:",
        "FAILOVER_BROKER_PREFIX": f"{queue}:",
        "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
        "FAILOVER_DYNAMODB_TABLE": f"jsonlogs-{uuid.uuid4().hex[:8]}",
        "FAILOVER_LIVENESS_FILE": str(tmp_path / "alive"),
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "producers.cli",
                "worker",
                "-c",
                "1",
                "--without-gossip",
                "-n",
                f"{queue}@%h",
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while b" ready." not in stderr.read_bytes() + stdout.read_bytes():
                assert worker.poll() is None, stderr.read_text()[-3000:]
                assert time.monotonic() < deadline, "the worker did not get ready within 60s"
                time.sleep(0.1)
            os.killpg(worker.pid, signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

    events = _json_events(stdout, stderr)
    assert "worker.starting" in events  # Celery's banner, as one event
    assert any(e.endswith(" ready.") for e in events)
    assert "worker: Warm shutdown (MainProcess)" in events


def test_a_json_watcher_writes_only_json_lines(
    redis_server_url: str, real_redis: redis.Redis, prefix: str, dynamodb_endpoint: str, tmp_path: Path
) -> None:
    with SandboxFleet(["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig") as fleet:
        load_sample_fleet(fleet, active="site-a")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FAILOVER_LOG_JSON": "true",
            "FAILOVER_REDIS_URL": redis_server_url,
            "FAILOVER_KEY_PREFIX": prefix,
            "FAILOVER_BROKER_PREFIX": prefix,
            "FAILOVER_QUEUE": f"{prefix}steps",
            "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
            "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
            "FAILOVER_DYNAMODB_TABLE": f"jsonlogs-{uuid.uuid4().hex[:8]}",  # absent: warnings, as JSON
            "FAILOVER_LIVENESS_FILE": str(tmp_path / "alive"),
            "FAILOVER_KUBECONFIG": str(fleet.kubeconfig_for("watcher")),
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }
        stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            watcher = subprocess.Popen(
                [sys.executable, "-m", "producers.cli", "watcher"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + 60
                alive = tmp_path / "alive"  # touched by its main loop once it runs
                while not alive.exists():
                    assert watcher.poll() is None, stderr.read_text()[-3000:]
                    assert time.monotonic() < deadline, stderr.read_text()[-3000:]
                    time.sleep(0.1)
                os.killpg(watcher.pid, signal.SIGTERM)
                assert watcher.wait(timeout=30) == 0
            finally:
                if watcher.poll() is None:
                    os.killpg(watcher.pid, signal.SIGKILL)
                    watcher.wait()

    events = _json_events(stdout, stderr)
    assert any(e.startswith("watcher running on site-a, site-b") for e in events)
    assert "watcher stopped" in events


def _json_events(stdout: Path, stderr: Path) -> list[str]:
    """The ``event`` of every line of both outputs, once every line is known to be a JSON object."""
    lines = [
        (name, line)
        for name, path in (("stdout", stdout), ("stderr", stderr))
        for line in path.read_text().splitlines()
    ]
    not_json = []
    events = []
    for name, line in lines:
        try:
            events.append(str(json.loads(line)["event"]))
        except (ValueError, KeyError, TypeError):
            not_json.append(f"{name}: {line!r}")
    assert not_json == []
    return events
