"""The Failover status reconciler on a sandbox cluster: status and Events from run values built with fsm.

Runs move through ``fsm.decide`` (as the engine would move them) into an in-memory run store; after each
commit one reconciler pass (what the watcher does every ``FAILOVER_STATUS_INTERVAL``) brings the
Failover's status in line and creates the Events not yet created.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from fsm.decide import EventKind
from fsm.models import Failover, FailoverGroup
from fsm.plan import Step
from fsm.run import Run
from fsm.status import event_name
from producers.failover_status import FailoverStatusReconciler
from producers.kube import ClusterClient, connect
from sandbox.kube import SandboxCluster, SandboxFleet
from tests.factories import SHOP_GROUP
from tests.run_driver import T0, RunDriver
from workers.errors import ClusterUnreachable, ForbiddenError, OrchestratorError

pytestmark = pytest.mark.integration


def put_failover(cluster: SandboxCluster, *groups: str) -> dict[str, Any]:
    body = {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": "move-shop", "namespace": "shop"},
        "spec": {
            "targetCluster": "site-b",
            "failoverMode": "CONSISTENCY",
            "failoverGroups": [{"name": g} for g in groups or ("shop",)],
        },
    }
    return cluster.store.put(body)


class Runs:
    """A run store in memory: the newest version of each run, by Failover."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}

    def commit(self, run: Run) -> None:
        self.runs[run.run_id] = run

    def of(self, failover: str) -> list[Run]:
        return [r for r in self.runs.values() if r.failover == failover]


@pytest.fixture
def site_a_client(fleet: SandboxFleet) -> Iterator[ClusterClient]:
    clients = connect(fleet.kubeconfig_for("watcher"), ["site-a"], request_timeout=2.0, connect_timeout=1.0)
    yield clients["site-a"]
    clients["site-a"].close()


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
def reconciler(site_a_client: ClusterClient, runs: Runs) -> FailoverStatusReconciler:
    return FailoverStatusReconciler(
        {"site-a": site_a_client}, runs.of, clock=lambda: T0 + 100, instance="test-watcher"
    )


class Driver(RunDriver):
    """A run driven through fsm.decide; after every commit, one reconciler pass."""

    def __init__(
        self,
        cluster: SandboxCluster,
        reconciler: FailoverStatusReconciler,
        runs: Runs,
        group: FailoverGroup | None = None,
    ) -> None:
        self.cluster, self.reconciler = cluster, reconciler
        self.failed_passes = 0
        model = Failover.model_validate(cluster.store.get("Failover", "shop", "move-shop"))
        super().__init__(model, group, on_commit=runs.commit)

    def _commit(self, run: Run) -> Run:
        committed = super()._commit(run)
        if hasattr(self, "reconciler"):
            try:
                self.reconciler.reconcile("site-a", self.cluster.store.get("Failover", "shop", "move-shop"))
            except OrchestratorError:
                self.failed_passes += 1  # as the watcher does: the next pass writes it
        return committed


def status_of(cluster: SandboxCluster) -> dict[str, Any]:
    return cluster.store.get("Failover", "shop", "move-shop").get("status") or {}


def events(cluster: SandboxCluster) -> dict[str, dict[str, Any]]:
    items, _ = cluster.store.list("events", "shop")
    return {e["metadata"]["name"]: e for e in items if e["involvedObject"]["name"] == "move-shop"}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_status_and_events_follow_a_run_to_success(
    site_a: SandboxCluster, reconciler: FailoverStatusReconciler, runs: Runs
) -> None:
    obj = put_failover(site_a)
    driver = Driver(site_a, reconciler, runs)
    run_id = driver.run.run_id
    driver.start()
    status = status_of(site_a)
    assert (status["status"], status["state"]) == ("IN_PROGRESS", "VALIDATING")
    assert status["failoverGroups"] == [
        {
            "name": "shop",
            "namespace": "shop",
            "status": "IN_PROGRESS",
            "startTime": "2030-03-17T17:46:40Z",
            "message": "step validate",
            "currentStep": "validate",
            "runId": run_id,
        }
    ]
    assert conditions(status) == {
        "Ready": ("False", "InProgress"),
        "Progressing": ("True", "Validating"),
        "Failed": ("False", "NoFailure"),
        "OperatorActionRequired": ("False", "NoActionNeeded"),
    }
    assert {c["observedGeneration"] for c in status["conditions"]} == {obj["metadata"]["generation"]}
    [started] = events(site_a).values()
    assert (started["reason"], started["type"], started["action"]) == ("StepStarted", "Normal", "validate")
    assert started["involvedObject"]["uid"] == obj["metadata"]["uid"]

    driver.step(message="objects found")  # validate
    driver.step()  # acquire_lock
    driver.step()  # raise_fence
    assert status_of(site_a)["state"] == "DISABLING_NETWORK"
    assert status_of(site_a)["failoverGroups"][0]["currentStep"] == "disable_network"
    run = driver.finish()

    status = status_of(site_a)
    assert (status["status"], status["state"], status["message"]) == (
        "SUCCESS",
        "SUCCEEDED",
        "moved to site-b",
    )
    entry = status["failoverGroups"][0]
    assert entry["status"] == "SUCCESS" and "currentStep" not in entry
    assert run.finished_at == T0 + 19  # 19 steps of 1s each
    assert entry["completionTime"] == "2030-03-17T17:46:59Z"
    assert status["metrics"] == {
        "totalFailoverTimeSeconds": run.total_seconds(),
        "totalDowntimeSeconds": run.downtime_seconds(),
    }
    assert run.downtime_seconds() is not None
    assert conditions(status) == {
        "Ready": ("True", "Succeeded"),
        "Progressing": ("False", "Succeeded"),
        "Failed": ("False", "NoFailure"),
        "OperatorActionRequired": ("False", "NoActionNeeded"),
    }
    recorded = events(site_a)
    for key, record in run.steps.items():
        assert event_name("move-shop", run_id, key, "started") in recorded
        assert event_name("move-shop", run_id, key, record.outcome or "") in recorded
    done = recorded[event_name("move-shop", run_id, "validate", "done")]
    assert (done["reason"], done["message"]) == (
        "StepSucceeded",
        "group shop/shop: step validate finished: objects found",
    )
    assert recorded[event_name("move-shop", run_id, "disable_network", "started")]["message"] == (
        "group shop/shop: step disable_network started on site-a"
    )
    assert recorded[event_name("move-shop", run_id, "run", "succeeded")]["reason"] == "FailoverSucceeded"

    # Reconciling again, here or from another watcher (which knows of no Event), changes nothing.
    current = site_a.store.get("Failover", "shop", "move-shop")
    version = current["metadata"]["resourceVersion"]
    reconciler.reconcile("site-a", current)
    other = FailoverStatusReconciler(reconciler.clusters, runs.of)
    current["status"]["status"] = "IN_PROGRESS"  # as if it had not seen the final write
    with pytest.raises(OrchestratorError):  # 409: its copy is stale, so nothing is written
        other.reconcile("site-a", {**current, "metadata": {**current["metadata"], "resourceVersion": "1"}})
    assert site_a.store.get("Failover", "shop", "move-shop")["metadata"]["resourceVersion"] == version
    assert events(site_a).keys() == recorded.keys()


def test_a_failed_run_shows_its_failure(
    site_a: SandboxCluster, reconciler: FailoverStatusReconciler, runs: Runs
) -> None:
    put_failover(site_a)
    driver = Driver(site_a, reconciler, runs)
    driver.start()
    driver.until(Step.SCALE_DOWN_WORKLOADS)
    driver.step(EventKind.PERMANENT_FAILURE, message="RBAC forbids patch", cluster="site-a")
    assert status_of(site_a)["state"] == "COMPENSATING"
    assert status_of(site_a)["status"] == "IN_PROGRESS"
    run = driver.finish()
    status = status_of(site_a)
    assert status["status"] == "FAILED"
    assert status["message"] == run.message
    assert run.message.startswith("failed at step scale_down_workloads, cluster 'site-a'")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "StepFailed")
    assert "RBAC forbids patch" in failed["message"]
    warning = events(site_a)[event_name("move-shop", run.run_id, "scale_down_workloads", "failed")]
    assert (warning["type"], warning["reason"]) == ("Warning", "StepFailed")
    undo = [e for e in events(site_a).values() if e["action"].startswith("undo:")]
    assert undo, "compensation steps are recorded too"
    assert events(site_a)[event_name("move-shop", run.run_id, "run", "failed")]["type"] == "Warning"


def test_a_failure_past_the_point_of_no_return_asks_for_an_operator(
    site_a: SandboxCluster, reconciler: FailoverStatusReconciler, runs: Runs
) -> None:
    """Not "failed at step X" like any other failure: nothing was undone and the Failover says what to
    run to settle the group."""
    put_failover(site_a)
    driver = Driver(site_a, reconciler, runs)
    driver.start()
    driver.until(Step.SCALE_UP_WORKLOADS)
    driver.step(EventKind.PERMANENT_FAILURE, message="RBAC forbids patch", cluster="site-b")
    run = driver.finish()
    assert run.diverged and [a.step for a in run.compensation] == [Step.ABORT]
    required = next(c for c in status_of(site_a)["conditions"] if c["type"] == "OperatorActionRequired")
    assert (required["status"], required["reason"]) == ("True", "DivergedPastPointOfNoReturn")
    assert "past the point of no return (promote_volumes)" in required["message"]
    assert "failoverctl group resolve shop/shop --active CLUSTER" in required["message"]


def test_every_group_of_the_failover_decides_the_overall_status(
    site_a: SandboxCluster, reconciler: FailoverStatusReconciler, runs: Runs
) -> None:
    put_failover(site_a, "shop", "billing")
    driver = Driver(site_a, reconciler, runs)
    driver.start()
    groups = {g["name"]: g for g in status_of(site_a)["failoverGroups"]}
    assert groups["billing"] == {"name": "billing", "namespace": "shop", "status": "PENDING"}
    # The billing group's run (another worker's) fails.
    billing = FailoverGroup.model_validate(
        {**SHOP_GROUP, "metadata": {"name": "billing", "namespace": "shop"}}
    )
    other = Driver(site_a, reconciler, runs, billing)
    other.start()
    other.step(EventKind.PERMANENT_FAILURE, message="lock held", cluster="site-a")
    other.finish()
    site_a.faults.conflict_next(1)  # and one write races ours: the next pass writes it
    driver.step()
    assert site_a.faults.pending_conflicts == 0 and driver.failed_passes == 1
    driver.finish()
    status = status_of(site_a)
    groups = {g["name"]: g for g in status["failoverGroups"]}
    assert groups["billing"]["status"] == "FAILED" and groups["billing"]["runId"] == other.run.run_id
    assert groups["shop"]["status"] == "SUCCESS"
    assert status["status"] == "FAILED"
    assert status["message"] == f"shop/shop: moved to site-b; shop/billing: {other.run.message}"


def test_a_finished_failover_is_not_reconciled_again(
    site_a: SandboxCluster, reconciler: FailoverStatusReconciler, runs: Runs
) -> None:
    put_failover(site_a)
    driver = Driver(site_a, reconciler, runs)
    driver.start()
    older = driver.step()
    driver.finish()
    runs.commit(older)  # even a run store that went back in time cannot turn the clock back
    current = site_a.store.get("Failover", "shop", "move-shop")
    assert reconciler.reconcile("site-a", current) is current
    assert status_of(site_a)["status"] == "SUCCESS"


def test_a_write_that_fails_is_made_on_the_next_pass(
    site_a: SandboxCluster, reconciler: FailoverStatusReconciler, runs: Runs
) -> None:
    put_failover(site_a)
    driver = RunDriver(
        Failover.model_validate(site_a.store.get("Failover", "shop", "move-shop")), on_commit=runs.commit
    )
    failover = site_a.store.get("Failover", "shop", "move-shop")
    driver.start()
    site_a.faults.forbid("patch", "failovers.crd.hahomelabs.com/status")
    with pytest.raises(ForbiddenError):
        reconciler.reconcile("site-a", failover)
    assert status_of(site_a) == {}
    assert {e["reason"] for e in events(site_a).values()} == {"StepStarted"}  # Events still go out
    site_a.faults.reset()
    site_a.set_down(True)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable):
        reconciler.reconcile("site-a", failover)
    assert time.monotonic() - started < 3.0
    site_a.set_down(False)
    driver.step()
    reconciler.reconcile("site-a", site_a.store.get("Failover", "shop", "move-shop"))
    assert status_of(site_a)["state"] == driver.run.state_name


def test_a_failover_without_runs_is_left_alone(
    site_a: SandboxCluster, reconciler: FailoverStatusReconciler
) -> None:
    obj = put_failover(site_a)
    assert reconciler.reconcile("site-a", obj) is obj
    assert status_of(site_a) == {} and events(site_a) == {}
