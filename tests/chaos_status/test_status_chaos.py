"""Chaos on the real stack: Failover status writes fail 30% of the time during 10 runs, and every
Failover still ends with the status of its run.

Real Celery worker (production adapters: the official kubernetes client, boto3 on a moto DynamoDB),
Redis, two sandbox clusters, and the Failover watcher in a thread of the test process: it owns the
status. Runs alternate CONSISTENCY and UPTIME between the sites; one is made to fail (the source
refuses its network switch-off, so it compensates and ends FAILED). Also prints the Kubernetes
requests per step message, split into the steps' own and the status writer's (Failovers and Events).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm.models import Failover
from fsm.run import Run
from producers.kube import connect
from producers.watcher import FailoverWatcher
from sandbox.celery_worker import WorkerProcess
from sandbox.demo import NAMESPACE, Environment, _aws_env, _group, environment
from tests.chaos_status.harness import RequestTap
from workers.api import Orchestrator

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

RUNS = 10
FAILING = 4  # this run's source refuses to switch its network off: it compensates and fails


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Environment]:
    with environment(tmp_path) as built:
        yield built


def put_failover(world: Environment, name: str, mode: str, target: str) -> Failover:
    manifest = {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "targetCluster": target,
            "failoverMode": mode,
            "reason": "chaos",
            "failoverGroups": [{"name": "shop"}],
        },
    }
    world.fleet["site-a"].store.put(manifest)
    return Failover.model_validate(manifest)


def wait_run(handle: Orchestrator, run_id: str, timeout: float = 120.0) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = handle.run(run_id)
        if run is not None and run.terminal:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def statuses(world: Environment, names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        name: world.fleet["site-a"].store.get("Failover", NAMESPACE, name).get("status") or {}
        for name in names
    }


def test_status_converges_when_a_third_of_status_writes_fail(world: Environment, tmp_path: Path) -> None:
    taps = {
        c.name: RequestTap(c, status_failure_rate=0.3 if c.name == "site-a" else 0.0) for c in world.fleet
    }
    worker = WorkerProcess(world.env, name="chaos", queues=world.settings.queue, log_path=tmp_path / "w.log")
    clients = connect(world.fleet.kubeconfig_for("watcher"), world.fleet.names)
    runs: dict[str, Run] = {}
    try:
        worker.wait_ready()
        with _aws_env(world.env), Orchestrator(world.settings) as handle:
            group = _group(world.fleet)
            watcher = FailoverWatcher(
                handle, clients, operator_id=world.settings.operator_id, status_interval=0.2
            )
            with watcher:
                for tap in taps.values():
                    tap.reset()
                active = "site-a"
                for index in range(RUNS):
                    target = "site-b" if active == "site-a" else "site-a"
                    mode = "CONSISTENCY" if index % 2 == 0 else "UPTIME"
                    name = f"chaos-{index}"
                    request = put_failover(world, name, mode, target)
                    if index == FAILING:
                        world.fleet[active].faults.forbid("patch", "virtualservices")
                    submitted = handle.submit(request, group, failover_cluster="site-a")
                    run = runs[name] = wait_run(handle, submitted.run.run_id)
                    world.fleet[active].faults.allow("patch", "virtualservices")
                    if run.status.value == "SUCCESS":
                        active = target
                names = list(runs)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    shown = statuses(world, names)
                    if all(shown[n].get("status") == runs[n].status.value for n in names):
                        break
                    time.sleep(0.2)
    finally:
        worker.stop()
        for client in clients.values():
            client.close()
        for tap in taps.values():
            tap.close()

    shown = statuses(world, list(runs))
    outcomes = {name: run.status.value for name, run in runs.items()}
    assert list(outcomes.values()).count("FAILED") == 1 and outcomes[f"chaos-{FAILING}"] == "FAILED"
    for name, run in runs.items():
        status = shown[name]
        assert (status.get("status"), status.get("state")) == (run.status.value, run.state_name), name
        assert status["failoverGroups"][0]["runId"] == run.run_id
        assert status["message"] == run.message
    assert taps["site-a"].failed_status_writes >= 3, "the chaos must have hit status writes"

    messages = sum(run.tickets for run in runs.values())
    total = sum(tap.total() for tap in taps.values())
    status_requests = sum(tap.status_requests() for tap in taps.values())
    print(
        f"\n{RUNS} runs, {messages} step messages: {total} Kubernetes requests "
        f"({total / messages:.2f} per message); the steps' own {(total - status_requests) / messages:.2f} "
        f"per message; status (watcher: Failovers, Events) {status_requests} "
        f"({status_requests / RUNS:.1f} per Failover), {taps['site-a'].failed_status_writes} status "
        f"writes failed on purpose"
    )
    for tap in taps.values():
        print(dict(tap.counts))
