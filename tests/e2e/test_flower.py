"""Flower as the README starts it locally (its command parsed out of the README): on 127.0.0.1 with
basic auth, against the real Redis broker of a real Celery worker running a failover. Flower's HTTP
API finds the run's steps by task name, and refuses a request without the login."""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.redis_server import free_port
from tests.e2e.conftest import Stack
from tests.e2e.sandbox_processes import shell_env, stop
from tests.e2e.test_try_it import readme_blocks
from workers.app import create_app
from workers.messages import REDRIVE_TASK

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).parents[2]


def flower_command(port: int) -> list[str]:
    """The README's Flower command (terminal 4), on ``port`` instead of 5555."""
    line = next(line for line in readme_blocks()["terminal 4"] if " flower " in line)
    assert "--address=127.0.0.1" in line and "--port=5555" in line, line
    return shlex.split(line.replace("--port=5555", f"--port={port}"))


def _get(url: str, login: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if login is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def _until(check: Any, what: str, log: Path, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout:g}s; flower log: {log.read_text()[-2000:]}")
        time.sleep(0.2)


@pytest.fixture
def flower(stack: Stack, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Flower's URL and login, once it is up and the worker's task events reach it."""
    port, login = free_port(), f"admin:{secrets.token_hex(12)}"
    log = tmp_path / "flower.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            flower_command(port),
            env=shell_env(**stack.env, FLOWER_BASIC_AUTH=login),
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _get(f"{url}/healthcheck")[0] == 200, "Flower does not answer", log)
        stack.start_worker("w1")
        # The test workers send no heartbeats (--without-heartbeat): a sweep task that shows up in
        # Flower says its event receiver listens, so the run's events all reach it.
        app = create_app(stack.settings)
        try:
            _until(
                lambda: (
                    app.send_task(REDRIVE_TASK, queue=stack.settings.queue)
                    and _get(f"{url}/api/tasks?taskname={REDRIVE_TASK}", login)[1] not in (b"", b"{}")
                ),
                "Flower saw no task",
                log,
            )
        finally:
            app.close()
        yield url, login
    finally:
        assert stop(process) in (0, -15), log.read_text()[-2000:]


def test_flower_finds_a_runs_steps_by_name_and_wants_its_login(stack: Stack, flower: tuple[str, str]) -> None:
    url, login = flower
    run = stack.wait_finished(stack.submit("CONSISTENCY", run_id="run-flower"))
    assert run.status.value == "SUCCESS"
    expected = sorted({f"failover.{name}" for name in run.steps if not name.startswith("undo:")})
    assert "failover.promote_volumes" in expected

    def tasks(name: str) -> list[dict[str, Any]]:
        code, body = _get(f"{url}/api/tasks?taskname={name}&limit=100", login)
        assert code == 200, body[:300]
        found = json.loads(body).values()
        return [t for t in found if "run-flower" in str(t.get("args")) and t.get("state") == "SUCCESS"]

    found = _until(
        lambda: all(tasks(name) for name in expected) and {name: tasks(name) for name in expected},
        "not every step found in Flower",
        Path(stack.tmp_path / "flower.log"),
    )
    assert sorted(found) == expected
    assert all(t["name"] == name and t["worker"] for name, ts in found.items() for t in ts)

    refused, _ = _get(f"{url}/api/tasks?taskname=failover.promote_volumes")
    wrong, _ = _get(f"{url}/api/tasks", "admin:wrong")
    assert (refused, wrong) == (401, 401)


def test_flower_shows_a_paused_run_as_paused_by_its_run_id(stack: Stack, flower: tuple[str, str]) -> None:
    """An operator searching Flower for the run finds a ``failover.paused`` task naming it, in state
    PAUSED while the run is paused; its resume shows as ``failover.resumed``, SUCCESS."""
    from fsm.audit import ControlAction
    from workers.control_requests import Asked, request_control

    url, login = flower
    log = Path(stack.tmp_path / "flower.log")
    run_id = stack.submit("CONSISTENCY", run_id="run-paused")
    stack.wait_for(run_id, lambda r: r.dispatch is not None and r.started_at is not None)
    asked = request_control(
        stack.store, stack.engine.sender, run_id, Asked(ControlAction.PAUSE, "alice", "look first")
    )
    assert asked.refused is None, asked.refused
    paused = stack.wait_for(run_id, lambda r: r.paused)

    def search(state: str) -> list[dict[str, Any]]:
        code, body = _get(f"{url}/api/tasks?search={run_id}&limit=100", login)
        assert code == 200, body[:300]
        return [
            t for t in json.loads(body).values() if t.get("state") == state and run_id in str(t.get("args"))
        ]

    shown = _until(
        lambda: [t for t in search("PAUSED") if t["name"] == "failover.paused"], "no PAUSED task", log
    )
    assert len(shown) == 1 and shown[0]["worker"], shown
    assert f"failoverctl run resume {run_id}" in str(shown[0].get("result")), shown  # what to do next
    assert str(asked.record.id) in str(shown[0]["args"])  # type: ignore[union-attr]
    assert stack.store.load(run_id).paused and paused.at_step is stack.store.load(run_id).at_step  # type: ignore[union-attr]

    resumed = request_control(
        stack.store, stack.engine.sender, run_id, Asked(ControlAction.RESUME, "alice", "go")
    )
    assert resumed.refused is None, resumed.refused
    assert stack.wait_finished(run_id).status.value == "SUCCESS"
    done = _until(
        lambda: [t for t in search("SUCCESS") if t["name"] == "failover.resumed"], "no resumed task", log
    )
    assert "RESUMED" in str(done[0].get("result")), done
