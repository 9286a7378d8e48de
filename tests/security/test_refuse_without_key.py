"""Without ``FAILOVER_RUN_KEY`` (and without the development switch) nothing that reads or writes runs
starts: a worker exits at start-up, a command that touches runs ends with one line naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from producers.cli import app
from sandbox.celery_worker import WorkerProcess
from sandbox.stack import FAST_TIMING, stack_settings, worker_env


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAILOVER_RUN_KEY", "FAILOVER_RUN_KEY_PREVIOUS", "FAILOVER_INSECURE_DEV"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.e2e
def test_a_worker_without_the_run_key_refuses_to_start(
    no_key: None, redis_server_url: str, real_redis: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    settings = stack_settings(redis_server_url, prefix, timing=FAST_TIMING, run_key=None)
    env = worker_env(settings, FAILOVER_ADAPTERS="sandbox.fakes:adapters_from_env")
    assert "FAILOVER_RUN_KEY" not in env and "FAILOVER_RUN_KEY" not in os.environ
    worker = WorkerProcess(env, name="keyless", queues=settings.queue, log_path=tmp_path / "keyless.log")
    try:
        with pytest.raises(RuntimeError, match="exited"):
            worker.wait_ready(timeout=60)
        assert "FAILOVER_RUN_KEY is not set" in (tmp_path / "keyless.log").read_text()
    finally:
        worker.stop()


def test_a_command_that_touches_runs_refuses_in_one_line_without_the_run_key(
    no_key: None, monkeypatch: pytest.MonkeyPatch, redis_server_url: str
) -> None:
    monkeypatch.setenv("FAILOVER_REDIS_URL", redis_server_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    result = CliRunner().invoke(app, ["status"])

    assert result.exit_code == 1
    assert result.output.startswith("error: FAILOVER_RUN_KEY is not set"), result.output
    assert len(result.output.strip().splitlines()) == 1
