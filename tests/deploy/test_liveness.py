"""workers.liveness: the file the worker touches and the check the Kubernetes probe runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.signals import heartbeat_sent, worker_ready

from workers import liveness

ROOT = Path(__file__).resolve().parents[2]


def test_a_fresh_file_passes_a_stale_one_fails_and_a_missing_one_fails(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    ok, message = liveness.check(path, max_age=60, now=1_000.0)
    assert not ok and "does not exist" in message
    liveness.touch(path, now=1_000.0)
    assert liveness.check(path, max_age=60, now=1_030.0)[0]
    ok, message = liveness.check(path, max_age=60, now=1_061.0)
    assert not ok and "61s ago" in message and "more than 60s" in message


def test_touch_creates_missing_directories_and_bumps_the_time(tmp_path: Path) -> None:
    path = tmp_path / "run" / "alive"
    liveness.touch(path, now=100.0)
    assert path.stat().st_mtime == 100.0
    liveness.touch(path)
    assert abs(path.stat().st_mtime - time.time()) < 5


def _probe(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The probe's exact command line, as a subprocess with the file from the environment."""
    return subprocess.run(
        [sys.executable, "-m", "workers.liveness", "check", *args],
        env={**os.environ, liveness.ENV_FILE: str(env_file)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_probe_command_exits_zero_when_fresh_and_one_when_stale(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    liveness.touch(path)
    fresh = _probe(path, "--max-age", "60")
    assert fresh.returncode == 0 and "alive" in fresh.stdout
    os.utime(path, (time.time() - 120, time.time() - 120))
    stale = _probe(path, "--max-age", "60")
    assert stale.returncode == 1 and "not alive" in stale.stderr


def test_the_default_file_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(liveness.ENV_FILE, str(tmp_path / "from-env"))
    assert liveness.default_path() == tmp_path / "from-env"
    monkeypatch.delenv(liveness.ENV_FILE)
    assert liveness.default_path() == Path(liveness.DEFAULT_FILE)


def test_bad_arguments_are_a_usage_error_not_a_verdict(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        liveness.main(["check", "--max-age", "soon"])
    assert exited.value.code == 2
    assert liveness.main(["touch", "--file", str(tmp_path / "a")]) == 0
    assert liveness.main(["check", "--file", str(tmp_path / "a"), "--max-age", "60"]) == 0


def test_the_celery_signals_touch_the_file_until_disconnected(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    disconnect = liveness.connect_celery_signals(path)
    try:
        worker_ready.send(sender=None)
        assert liveness.check(path, max_age=5)[0]
        os.utime(path, (1.0, 1.0))
        heartbeat_sent.send(sender=None)
        assert liveness.check(path, max_age=5)[0]
    finally:
        disconnect()
    os.utime(path, (1.0, 1.0))
    heartbeat_sent.send(sender=None)
    assert path.stat().st_mtime == 1.0
