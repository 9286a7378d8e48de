"""A real prefork Celery worker with the metrics and liveness hooks: the probe passes while its main
loop beats, and its parent serves the metrics its pool processes wrote (multiprocess mode)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from workers.app import create_app
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(condition: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s; worker log:\n{log.read_text()[-3000:]}")


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:
        return ""


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.deploy.worker_app",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "-Q",
                env["FAILOVER_QUEUE"],
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"deploytest-{uuid.uuid4().hex[:6]}@%h",
            ],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._out.close()


@pytest.fixture
def worker(
    redis_server_url: str, real_redis: redis.Redis, prefix: str, tmp_path: Path
) -> Iterator[tuple[Worker, dict[str, str]]]:
    """The worker, its broker keys under this test's prefix (``real_redis`` removes them once the
    worker has stopped)."""
    env = {
        "FAILOVER_REDIS_URL": redis_server_url,
        "FAILOVER_BROKER_PREFIX": prefix,
        "FAILOVER_KEY_PREFIX": prefix,
        "FAILOVER_QUEUE": f"{prefix}deploytest",
        "FAILOVER_LIVENESS_FILE": str(tmp_path / "alive"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "DEPLOYTEST_METRICS_PORT": str(_free_port()),
    }
    started = Worker(env, tmp_path / "worker.log")
    try:
        yield started, env
    finally:
        started.stop()


def test_the_probe_passes_while_the_worker_beats_and_metrics_sum_its_processes(
    worker: tuple[Worker, dict[str, str]],
) -> None:
    process, env = worker
    alive = Path(env["FAILOVER_LIVENESS_FILE"])
    _wait(alive.exists, 60, "the worker touched its liveness file when ready", process.log)
    first = alive.stat().st_mtime
    _wait(lambda: alive.stat().st_mtime > first, 10, "event heartbeats kept touching it", process.log)
    probe = subprocess.run(
        [sys.executable, "-m", "workers.liveness", "check", "--max-age", "30"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr

    port = int(env["DEPLOYTEST_METRICS_PORT"])
    _wait(lambda: "failover_queue_depth" in _scrape(port), 30, "the parent served /metrics", process.log)
    app = create_app(
        Settings(
            redis_url=env["FAILOVER_REDIS_URL"],
            queue=env["FAILOVER_QUEUE"],
            broker_prefix=env["FAILOVER_BROKER_PREFIX"],
        )
    )
    try:
        for index in range(2):
            app.send_task("deploytest.observe_run", args=[f"hook-{index}"], queue=env["FAILOVER_QUEUE"])
    finally:
        app.close()
    line = 'failover_runs_total{mode="CONSISTENCY",outcome="success"} 2.0'
    _wait(lambda: line in _scrape(port).splitlines(), 30, "two runs counted across processes", process.log)
    assert 'failover_queue_depth{queue="probe"} 1.0' in _scrape(port)
    assert 'failover_admission_queued_runs{lane="bulk"} 2.0' in _scrape(port)
