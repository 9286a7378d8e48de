"""The long-running failoverctl commands as the operator starts them: each runs in the foreground,
says it is running, and stops cleanly (exit 0) on SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION, moto_dynamodb
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.stack import SANDBOX_RUN_KEY, component_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FAILOVERCTL = str(Path(sys.executable).with_name("failoverctl"))


@pytest.fixture
def env(
    tmp_path: Path, redis_server_url: str, real_redis: redis.Redis, prefix: str
) -> Iterator[dict[str, str]]:
    """The processes' environment; their Redis keys, under ``prefix``, are removed by ``real_redis``
    once they have stopped."""
    with (
        SandboxFleet(["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig") as fleet,
        moto_dynamodb() as endpoint,
    ):
        load_sample_fleet(fleet, active="site-a")
        values = {
            **os.environ,
            "FAILOVER_REDIS_URL": redis_server_url,
            "FAILOVER_KEY_PREFIX": prefix,
            "FAILOVER_BROKER_PREFIX": prefix,
            "FAILOVER_QUEUE": f"{prefix}steps",
            "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
            "FAILOVER_KUBECONFIG": str(fleet.kubeconfig_path),  # the worker's; the others' next to it
            "FAILOVER_CLUSTERS": json.dumps(["site-a", "site-b"]),
            "FAILOVER_DYNAMODB_ENDPOINT_URL": endpoint,
            "FAILOVER_DYNAMODB_TABLE": f"cli-{uuid.uuid4().hex[:8]}",
            "FAILOVER_OPERATOR_ID": "failover-orchestrator",
            "FAILOVER_LIVENESS_FILE": str(tmp_path / "alive"),
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "COLUMNS": "200",
        }
        subprocess.run(
            [FAILOVERCTL, "dynamodb", "init"], env=values, check=True, capture_output=True, timeout=60
        )
        yield values


def run_until(args: list[str], env: dict[str, str], ready: str, stop: int, log: Path) -> tuple[int, str]:
    with log.open("w") as output:
        process = subprocess.Popen([FAILOVERCTL, *args], env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while ready not in log.read_text():
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            time.sleep(1.0)  # let it do a round of work
            process.send_signal(stop)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return code, log.read_text()


@pytest.mark.parametrize("command", ["watcher", "health-checker"])
def test_the_producers_run_in_the_foreground_and_stop_on_sigterm(
    env: dict[str, str], tmp_path: Path, command: str
) -> None:
    what = command.replace("-", " ")
    kubeconfig = Path(env["FAILOVER_KUBECONFIG"])
    env = component_env(env, lambda c: kubeconfig.with_name(f"{kubeconfig.name}.{c}"), command)
    code, output = run_until(
        [command], env, f"{what} running on site-a, site-b", signal.SIGTERM, tmp_path / "out.log"
    )
    assert code == 0, output[-3000:]
    assert f"{what} stopped" in output
    assert (tmp_path / "alive").exists()  # the liveness probe's file


def test_the_worker_command_starts_a_celery_worker_on_the_queue(env: dict[str, str], tmp_path: Path) -> None:
    code, output = run_until(
        ["worker", "-c", "1", "--without-gossip", "--without-mingle"],
        env,
        " ready.",
        signal.SIGTERM,
        tmp_path / "out.log",
    )
    assert code == 0, output[-3000:]
    assert f"{env['FAILOVER_QUEUE']}" in output and "failover.scale_down_workloads" in output


def test_sandbox_up_prints_how_to_reach_it_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    code, output = run_until(
        ["sandbox", "up"], {**os.environ, "COLUMNS": "200"}, "sandbox up", signal.SIGINT, tmp_path / "out.log"
    )
    assert code == 0, output[-3000:]
    assert "export FAILOVER_KUBECONFIG=" in output and "export FAILOVER_DYNAMODB_ENDPOINT_URL=" in output
    assert "export KUBECONFIG=" in output and "kubectl --context site-a get all -n shop" in output
    # Its worker (a process group of its own) was stopped too.
    queue = shlex.split(output.split("export FAILOVER_QUEUE=")[1].splitlines()[0])[0]
    left = subprocess.run(["pgrep", "-f", queue], capture_output=True, text=True, check=False)
    assert left.stdout == "", f"processes left running: {left.stdout}"
