"""FailoverStatusWriter on a sandbox cluster: status and Events from run values built with fsm."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fsm.decide import Decision, Event, EventKind, decide
from fsm.models import Failover
from fsm.plan import Step
from fsm.run import Run, new_run
from sandbox.kube import SandboxCluster
from tests.factories import group
from tests.kube.conftest import wait_for
from workers.kube import KubeClients
from workers.status import FailoverStatusWriter, aggregate, event_name

pytestmark = pytest.mark.integration

T0 = 1_900_000_000.0


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


class Driver:
    """Moves a run through fsm.decide the way the engine would, at a controlled clock."""

    def __init__(self, cluster: SandboxCluster, writer: FailoverStatusWriter) -> None:
        obj = cluster.store.get("Failover", "shop", "move-shop")
        model = Failover.model_validate(obj)
        self.now = T0
        self.run = new_run(
            run_id="run-1", failover=model, group=group(), source_cluster="site-a", now=self.now
        )
        self.writer = writer

    def apply(self, decision: Decision) -> Run:
        assert decision.changed, decision.reason
        self.run = decision.run
        self.writer.observe(self.run, decision.reason)
        return self.run

    def start(self) -> Run:
        return self.apply(decide(self.run, Event(kind=EventKind.START), self.now))

    def step(self, kind: EventKind = EventKind.SUCCEEDED, message: str = "", **fields: Any) -> Run:
        assert self.run.dispatch is not None
        started = self.now
        self.now += 1.0
        event = Event(
            kind=kind,
            step=self.run.dispatch.step,
            ticket=self.run.dispatch.ticket,
            started_at=started,
            message=message,
            **fields,
        )
        return self.apply(decide(self.run, event, self.now))

    def finish(self) -> Run:
        while not self.run.terminal:
            self.step(message="ok")
        return self.run


@pytest.fixture
def writer(clients: KubeClients) -> FailoverStatusWriter:
    return FailoverStatusWriter(clients, "site-a", clock=lambda: T0 + 100, instance="test-worker")


def status_of(cluster: SandboxCluster) -> dict[str, Any]:
    return cluster.store.get("Failover", "shop", "move-shop").get("status") or {}


def events(cluster: SandboxCluster) -> dict[str, dict[str, Any]]:
    items, _ = cluster.store.list("events", "shop")
    return {e["metadata"]["name"]: e for e in items if e["involvedObject"]["name"] == "move-shop"}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_status_and_events_follow_a_run_to_success(
    site_a: SandboxCluster, writer: FailoverStatusWriter
) -> None:
    obj = put_failover(site_a)
    driver = Driver(site_a, writer)
    driver.start()
    status = status_of(site_a)
    assert (status["status"], status["state"]) == ("IN_PROGRESS", "VALIDATING")
    assert status["failoverGroups"] == [
        {
            "name": "shop",
            "namespace": "shop",
            "status": "IN_PROGRESS",
            "startTime": "2030-03-17T17:46:40Z",
            "message": "started; next validate",
            "currentStep": "validate",
            "runId": "run-1",
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
        assert event_name("move-shop", "run-1", key, "started") in recorded
        assert event_name("move-shop", "run-1", key, record.outcome or "") in recorded
    done = recorded[event_name("move-shop", "run-1", "validate", "done")]
    assert (done["reason"], done["message"]) == (
        "StepSucceeded",
        "group shop/shop: step validate finished: objects found",
    )
    assert recorded[event_name("move-shop", "run-1", "disable_network", "started")]["message"] == (
        "group shop/shop: step disable_network started on site-a"
    )
    assert recorded[event_name("move-shop", "run-1", "run", "succeeded")]["reason"] == "FailoverSucceeded"

    # Observing again, here or from another worker's writer, changes and creates nothing.
    version = site_a.store.get("Failover", "shop", "move-shop")["metadata"]["resourceVersion"]
    writer.observe(run, "again")
    FailoverStatusWriter(writer.clients, "site-a").observe(run, "again")
    assert site_a.store.get("Failover", "shop", "move-shop")["metadata"]["resourceVersion"] == version
    assert events(site_a).keys() == recorded.keys()


def test_a_failed_run_shows_its_failure(site_a: SandboxCluster, writer: FailoverStatusWriter) -> None:
    put_failover(site_a)
    driver = Driver(site_a, writer)
    driver.start()
    driver.step()  # validate
    driver.step()  # acquire_lock
    driver.step()  # raise_fence
    driver.step()  # disable_network
    assert driver.run.dispatch is not None and driver.run.dispatch.step is Step.SCALE_DOWN_WORKLOADS
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
    warning = events(site_a)[event_name("move-shop", "run-1", "scale_down_workloads", "failed")]
    assert (warning["type"], warning["reason"]) == ("Warning", "StepFailed")
    undo = [e for e in events(site_a).values() if e["action"].startswith("undo:")]
    assert undo, "compensation steps are recorded too"
    assert events(site_a)[event_name("move-shop", "run-1", "run", "failed")]["type"] == "Warning"


def test_a_failure_past_the_point_of_no_return_asks_for_an_operator(
    site_a: SandboxCluster, writer: FailoverStatusWriter
) -> None:
    """Not "failed at step X" like any other failure: nothing was undone and the Failover says what to
    run to settle the group."""
    put_failover(site_a)
    driver = Driver(site_a, writer)
    driver.start()
    while driver.run.dispatch is not None and driver.run.dispatch.step is not Step.SCALE_UP_WORKLOADS:
        driver.step()
    driver.step(EventKind.PERMANENT_FAILURE, message="RBAC forbids patch", cluster="site-b")
    run = driver.finish()
    assert run.diverged and [a.step for a in run.compensation] == [Step.ABORT]
    required = next(c for c in status_of(site_a)["conditions"] if c["type"] == "OperatorActionRequired")
    assert (required["status"], required["reason"]) == ("True", "DivergedPastPointOfNoReturn")
    assert "past the point of no return (promote_volumes)" in required["message"]
    assert "failoverctl group resolve shop/shop --active CLUSTER" in required["message"]


def test_other_groups_entries_survive_and_decide_the_overall_status(
    site_a: SandboxCluster, writer: FailoverStatusWriter
) -> None:
    put_failover(site_a, "shop", "billing")
    driver = Driver(site_a, writer)
    driver.start()
    groups = {g["name"]: g for g in status_of(site_a)["failoverGroups"]}
    assert groups["billing"] == {"name": "billing", "namespace": "shop", "status": "PENDING"}
    # Another worker records the billing group's run, which failed.
    current = site_a.store.get("Failover", "shop", "move-shop")
    current["status"]["failoverGroups"] = [
        g if g["name"] == "shop" else {**g, "status": "FAILED", "message": "lock held", "runId": "run-2"}
        for g in current["status"]["failoverGroups"]
    ]
    site_a.store.update("Failover", "shop", "move-shop", current, subresource="status")
    site_a.faults.conflict_next(1)  # and one more write races ours
    driver.step()
    assert site_a.faults.pending_conflicts == 0
    status = status_of(site_a)
    assert status["status"] == "IN_PROGRESS"
    driver.finish()
    status = status_of(site_a)
    groups = {g["name"]: g for g in status["failoverGroups"]}
    assert groups["billing"] == {
        "name": "billing",
        "namespace": "shop",
        "status": "FAILED",
        "message": "lock held",
        "runId": "run-2",
    }
    assert groups["shop"]["status"] == "SUCCESS"
    assert status["status"] == "FAILED"
    assert status["message"] == "shop/shop: moved to site-b; shop/billing: lock held"


def test_a_late_older_observation_does_not_turn_back_the_clock(
    site_a: SandboxCluster, writer: FailoverStatusWriter
) -> None:
    put_failover(site_a)
    driver = Driver(site_a, writer)
    driver.start()
    older = driver.step()
    driver.finish()
    writer.observe(older, "late redelivery of an old observation")
    assert status_of(site_a)["status"] == "SUCCESS"


def test_writing_is_best_effort(site_a: SandboxCluster, writer: FailoverStatusWriter) -> None:
    driver = Driver.__new__(Driver)  # a run whose Failover does not exist on the cluster
    driver.now, driver.writer = T0, writer
    driver.run = new_run(
        run_id="run-9",
        failover=Failover.model_validate(
            {
                "metadata": {"name": "move-shop", "namespace": "shop"},
                "spec": {
                    "targetCluster": "site-b",
                    "failoverMode": "UPTIME",
                    "failoverGroups": [{"name": "shop"}],
                },
            }
        ),
        group=group(),
        source_cluster="site-a",
        now=T0,
    )
    driver.start()  # nothing to write to: logged, not raised
    assert events(site_a) == {}

    put_failover(site_a)
    site_a.faults.forbid("patch", "failovers.crd.hahomelabs.com/status")
    driver.step()
    assert status_of(site_a) == {}
    assert {e["reason"] for e in events(site_a).values()} == {"StepStarted", "StepSucceeded"}  # still told
    site_a.faults.reset()
    site_a.set_down(True)
    started = time.monotonic()
    driver.step()
    assert time.monotonic() - started < 2.0
    site_a.set_down(False)
    driver.step()
    wait_for(lambda: status_of(site_a).get("state") == driver.run.state_name)


def test_aggregate() -> None:
    assert aggregate([]) == "PENDING"
    assert aggregate(["SUCCESS", "SUCCESS"]) == "SUCCESS"
    assert aggregate(["SUCCESS", "FAILED"]) == "FAILED"
    assert aggregate(["SUCCESS", "PENDING"]) == "IN_PROGRESS"
    assert aggregate(["FAILED", "IN_PROGRESS"]) == "IN_PROGRESS"


def test_event_names_are_valid_and_bounded() -> None:
    assert event_name("move-shop", "Run_1", "undo:0:scale_up_workloads", "done") == (
        "move-shop.run-1.undo-0-scale-up-workloads.done"
    )
    long = event_name("x" * 200, "y" * 200, "z", "done")
    assert len(long) <= 253 and long == event_name("x" * 200, "y" * 200, "z", "done")
