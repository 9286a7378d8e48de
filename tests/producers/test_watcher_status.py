"""The watcher keeps each Failover's status in line with its runs (level-triggered), on sandbox clusters,
a moto DynamoDB and the real Redis. No worker runs: the tests move the runs through ``fsm.decide`` and
commit them to the run store as the engine would."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from fsm.decide import Event, EventKind, decide
from fsm.models import GroupKey
from fsm.plan import Step
from fsm.run import Run
from producers.watcher import FailoverWatcher
from sandbox.kube import SandboxFleet
from tests.factories import history_record
from tests.producers.conftest import OPERATOR, SHOP, failover_manifest, wait_until
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination

pytestmark = pytest.mark.integration

MakeWatcher = Callable[..., FailoverWatcher]
STATUS = "failovers.crd.hahomelabs.com/status"


def status_of(fleet: SandboxFleet, cluster: str = "site-a", name: str = "move-shop") -> dict[str, Any]:
    obj = fleet[cluster].store.find("Failover", "shop", name)
    return (obj or {}).get("status") or {}


def drive(orchestrator: Orchestrator, run_id: str, *, fail_at: Step | None = None, steps: int = 1000) -> Run:
    """Move a stored run through fsm.decide (every step succeeds, or fails at ``fail_at``) and commit
    each version to the run store, at most ``steps`` steps."""
    run = orchestrator.store.load(run_id)
    assert run is not None
    now = time.time()

    def commit(event: Event) -> Run:
        decision = decide(run, event, now)
        committed = orchestrator.store.commit(decision.run, expected_version=run.version)
        assert committed is not None
        return committed

    if run.dispatch is None and not run.terminal:
        run = commit(Event(kind=EventKind.START))
    while not run.terminal and steps > 0:
        assert run.dispatch is not None
        failing = run.dispatch.step is fail_at
        run = commit(
            Event(
                kind=EventKind.PERMANENT_FAILURE if failing else EventKind.SUCCEEDED,
                step=run.dispatch.step,
                ticket=run.dispatch.ticket,
                started_at=now,
                message="refused by the test" if failing else "ok",
                cluster="site-a",
            )
        )
        steps -= 1
    return run


def the_run(orchestrator: Orchestrator, name: str = "move-shop") -> Run:
    runs = wait_until(lambda: orchestrator.runs(failover=f"shop/{name}"), what="the run submitted")
    [run] = runs
    return run


def test_a_status_write_that_failed_converges_once_the_fault_clears(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator
) -> None:
    fleet["site-a"].faults.forbid("patch", STATUS)
    watcher = make_watcher(status_interval=0.05).start()
    fleet["site-a"].store.put(failover_manifest())
    run = the_run(orchestrator)
    wait_until(lambda: watcher.stats["site-a"].status_write_failures >= 3, what="failed status writes")
    assert status_of(fleet) == {}
    drive(orchestrator, run.run_id)  # the run finishes while no status can be written
    time.sleep(0.2)
    assert status_of(fleet) == {}

    fleet["site-a"].faults.allow("patch", STATUS)
    status = wait_until(lambda: (s := status_of(fleet)).get("status") == "SUCCESS" and s, what="SUCCESS")
    assert status["state"] == "SUCCEEDED" and status["failoverGroups"][0]["runId"] == run.run_id
    assert status["message"] == "moved to site-b"


def test_transient_errors_and_conflicts_on_status_writes_are_healed(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator
) -> None:
    make_watcher(status_interval=0.05).start()
    fleet["site-a"].store.put(failover_manifest())
    run = the_run(orchestrator)
    wait_until(lambda: status_of(fleet).get("status") == "IN_PROGRESS", what="IN_PROGRESS")
    fleet["site-a"].faults.fail_next(3, 503)
    fleet["site-a"].faults.conflict_next(3)
    drive(orchestrator, run.run_id, fail_at=Step.SCALE_DOWN_WORKLOADS)
    status = wait_until(lambda: (s := status_of(fleet)).get("status") == "FAILED" and s, what="FAILED")
    assert status["message"].startswith("failed at step scale_down_workloads")
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "StepFailed"


def test_a_restarted_watcher_converges(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator, enqueued: Callable[[], int]
) -> None:
    first = make_watcher(status_interval=0.05).start()
    fleet["site-a"].faults.forbid("patch", STATUS)  # its submission's status is lost
    fleet["site-a"].store.put(failover_manifest())
    run = the_run(orchestrator)
    wait_until(lambda: first.stats["site-a"].status_write_failures >= 1, what="a failed status write")
    first.stop()
    fleet["site-a"].faults.reset()
    drive(orchestrator, run.run_id, steps=5)
    assert status_of(fleet) == {}

    second = make_watcher(status_interval=0.05).start()
    status = wait_until(lambda: (s := status_of(fleet)).get("status") == "IN_PROGRESS" and s, what="shown")
    assert status["failoverGroups"][0]["runId"] == run.run_id
    assert enqueued() == 1  # seen again without status: not submitted again
    second.stop()

    drive(orchestrator, run.run_id)  # finishes while no watcher runs
    make_watcher(status_interval=0.05).start()
    wait_until(lambda: status_of(fleet).get("status") == "SUCCESS", what="SUCCESS after the restart")
    assert len(orchestrator.runs(failover="shop/move-shop")) == 1


def test_a_failover_of_two_groups_shows_both(
    fleet: SandboxFleet,
    make_watcher: MakeWatcher,
    orchestrator: Orchestrator,
    coordination: DynamoCoordination,
) -> None:
    reports = copy.deepcopy(fleet["site-a"].store.get("FailoverGroup", "shop", "shop"))
    reports["metadata"] = {"name": "reports", "namespace": "shop"}
    reports["spec"] = {"operatorID": OPERATOR, "workloads": [{"kind": "CronJob", "name": "report"}]}
    for cluster in fleet:
        cluster.store.put(copy.deepcopy(reports))
    coordination.set_initial_owner(GroupKey(operator_id=OPERATOR, namespace="shop", name="reports"), "site-a")
    watcher = make_watcher(status_interval=0.05).start()
    fleet["site-a"].store.put(failover_manifest(groups=[{"name": "shop"}, {"name": "reports"}]))
    runs = wait_until(
        lambda: len(r := orchestrator.runs(failover="shop/move-shop")) == 2 and r, what="two runs"
    )
    by_group = {run.group.name: run for run in runs}
    drive(orchestrator, by_group["shop"].run_id)
    status = wait_until(
        lambda: (s := status_of(fleet)).get("failoverGroups", [{}])[0].get("status") == "SUCCESS" and s,
        what="shop SUCCESS",
    )
    assert status["status"] == "IN_PROGRESS"
    assert [g["name"] for g in status["failoverGroups"]] == ["shop", "reports"]

    drive(orchestrator, by_group["reports"].run_id, fail_at=Step.SCALE_DOWN_WORKLOADS)
    status = wait_until(lambda: (s := status_of(fleet)).get("status") == "FAILED" and s, what="FAILED")
    entries = {g["name"]: g for g in status["failoverGroups"]}
    assert (entries["shop"]["status"], entries["reports"]["status"]) == ("SUCCESS", "FAILED")
    assert status["message"].startswith("shop/shop: moved to site-b; shop/reports: failed at step")
    time.sleep(0.2)
    writes = watcher.stats["site-a"].status_writes
    time.sleep(0.3)  # finished: not reconciled (nor written) again
    assert watcher.stats["site-a"].status_writes == writes


def group_state(fleet: SandboxFleet, cluster: str) -> dict[str, Any]:
    return fleet[cluster].store.get("FailoverGroup", "shop", "shop").get("status") or {}


def test_a_finished_run_refreshes_its_groups_status_on_every_cluster_at_once(
    fleet: SandboxFleet,
    make_watcher: MakeWatcher,
    orchestrator: Orchestrator,
    coordination: DynamoCoordination,
) -> None:
    # The periodic refresh runs once when each cluster is first listed, then not for an hour: what
    # the FailoverGroups show after the run can only come from the run's completion.
    watcher = make_watcher(status_interval=0.05, group_status_interval=3600.0).start()
    for cluster in ("site-a", "site-b"):
        wait_until(lambda c=cluster: group_state(fleet, c).get("globalState", {}).get("activeCluster"))
        status = group_state(fleet, cluster)
        assert status["globalState"]["activeCluster"] == "site-a"
        assert status["suspended"] is False  # the sample group's spec omits it: the column says false
    fleet["site-a"].store.put(failover_manifest())
    run = the_run(orchestrator)
    # What the run's completion step does in DynamoDB before the run is committed as finished.
    grant = coordination.acquire_lock(
        SHOP, holder="test", run_id=run.run_id, lease_seconds=60, now=time.time()
    )
    now = time.time()
    record = history_record(run_id=run.run_id, failover="shop/move-shop", started_at=now - 5, finished_at=now)
    coordination.complete_failover(
        SHOP, token=grant.token, expected_owner="site-a", new_owner="site-b", record=record
    )
    assert all(
        group_state(fleet, c)["globalState"]["activeCluster"] == "site-a" for c in ("site-a", "site-b")
    )

    drive(orchestrator, run.run_id)

    wait_until(lambda: status_of(fleet).get("status") == "SUCCESS", what="the Failover SUCCESS")
    for cluster in ("site-a", "site-b"):  # written before the Failover's own status
        state = group_state(fleet, cluster)["globalState"]
        assert state["activeCluster"] == "site-b", cluster
        assert state["lastFailover"]["runId"] == run.run_id
    assert watcher.stats["site-a"].group_status_writes >= 2  # the first sync, then the run's end
