"""``fsm.status``: a Failover's whole status (and its Events) as a pure function of it and its runs."""

from __future__ import annotations

from typing import Any

from fsm.decide import EventKind
from fsm.models import FailoverGroup
from fsm.plan import Step
from fsm.run import Run, Superseded
from fsm.status import aggregate, event_name, failover_status, needs_write, run_events
from tests.factories import SHOP_GROUP, failover
from tests.run_driver import T0, RunDriver

NOW = T0 + 100


def manifest(*groups: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = failover().model_dump(by_alias=True, mode="json", exclude_none=True)
    obj["metadata"] = {"name": "move-shop", "namespace": "shop", "generation": 2, "uid": "u-1"}
    obj["spec"]["failoverGroups"] = [{"name": g} for g in groups or ("shop",)]
    if status is not None:
        obj["status"] = status
    return obj


def billing() -> FailoverGroup:
    return FailoverGroup.model_validate({**SHOP_GROUP, "metadata": {"name": "billing", "namespace": "shop"}})


def driver(*groups: str, group: FailoverGroup | None = None) -> RunDriver:
    return RunDriver(failover(failoverGroups=[{"name": g} for g in groups or ("shop",)]), group)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_without_runs_every_group_is_pending() -> None:
    status = failover_status(manifest("shop", "billing"), [], NOW)
    assert (status["status"], status["state"]) == ("PENDING", "PENDING")
    assert status["failoverGroups"] == [
        {"name": "shop", "namespace": "shop", "status": "PENDING"},
        {"name": "billing", "namespace": "shop", "status": "PENDING"},
    ]
    assert conditions(status)["Ready"] == ("False", "Pending")


def test_a_submitted_run_makes_the_failover_in_progress() -> None:
    d = driver()
    status = failover_status(manifest(), [d.run], NOW)
    assert status["status"] == "IN_PROGRESS"
    assert status["failoverGroups"] == [
        {
            "name": "shop",
            "namespace": "shop",
            "status": "PENDING",
            "startTime": "2030-03-17T17:46:40Z",
            "message": "submitted; waiting for a worker",
            "runId": d.run.run_id,
        }
    ]


def test_a_run_in_progress_shows_its_step_and_state() -> None:
    d = driver()
    d.start()
    d.until(Step.DISABLE_NETWORK)
    status = failover_status(manifest(), [d.run], NOW)
    assert (status["status"], status["state"]) == ("IN_PROGRESS", "DISABLING_NETWORK")
    [entry] = status["failoverGroups"]
    assert entry["currentStep"] == "disable_network"
    assert entry["message"] == status["message"] == "step disable_network on site-a"
    assert conditions(status) == {
        "Ready": ("False", "InProgress"),
        "Progressing": ("True", "DisablingNetwork"),
        "Failed": ("False", "NoFailure"),
        "OperatorActionRequired": ("False", "NoActionNeeded"),
    }
    assert {c["observedGeneration"] for c in status["conditions"]} == {2}
    assert "metrics" not in status


def test_a_successful_run() -> None:
    d = driver()
    d.start()
    run = d.finish()
    status = failover_status(manifest(), [run], NOW)
    assert (status["status"], status["state"], status["message"]) == (
        "SUCCESS",
        "SUCCEEDED",
        "moved to site-b",
    )
    [entry] = status["failoverGroups"]
    assert entry["completionTime"] == "2030-03-17T17:46:59Z" and "currentStep" not in entry
    assert status["metrics"] == {
        "totalFailoverTimeSeconds": run.total_seconds(),
        "totalDowntimeSeconds": run.downtime_seconds(),
    }
    assert conditions(status) == {
        "Ready": ("True", "Succeeded"),
        "Progressing": ("False", "Succeeded"),
        "Failed": ("False", "NoFailure"),
        "OperatorActionRequired": ("False", "NoActionNeeded"),
    }


def test_a_failed_run_is_in_progress_while_compensating_then_failed() -> None:
    d = driver()
    d.start()
    d.until(Step.SCALE_DOWN_WORKLOADS)
    d.step(EventKind.PERMANENT_FAILURE, message="RBAC forbids patch", cluster="site-a")
    compensating = failover_status(manifest(), [d.run], NOW)
    assert (compensating["status"], compensating["state"]) == ("IN_PROGRESS", "COMPENSATING")
    assert compensating["failoverGroups"][0]["currentStep"].startswith("undo") or d.run.compensation
    run = d.finish()
    status = failover_status(manifest(status=compensating), [run], NOW + 5)
    assert status["status"] == "FAILED" and status["message"] == run.message
    assert run.message.startswith("failed at step scale_down_workloads, cluster 'site-a'")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "StepFailed")
    assert "RBAC forbids patch" in failed["message"]
    assert conditions(status)["OperatorActionRequired"] == ("False", "NoActionNeeded")
    assert "totalDowntimeSeconds" not in status["metrics"]  # a failed run measured no downtime


def test_a_failure_past_the_point_of_no_return_asks_for_an_operator() -> None:
    d = driver()
    d.start()
    d.until(Step.SCALE_UP_WORKLOADS)
    d.step(EventKind.PERMANENT_FAILURE, message="RBAC forbids patch", cluster="site-b")
    run = d.finish()
    assert run.diverged and [a.step for a in run.compensation] == [Step.ABORT]
    status = failover_status(manifest(), [run], NOW)
    required = next(c for c in status["conditions"] if c["type"] == "OperatorActionRequired")
    assert (required["status"], required["reason"]) == ("True", "DivergedPastPointOfNoReturn")
    assert "past the point of no return (promote_volumes)" in required["message"]
    assert "failoverctl group resolve shop/shop --active CLUSTER" in required["message"]


def test_a_fenced_run_is_superseded_and_undoes_nothing() -> None:
    d = driver()
    d.start()
    d.until(Step.SCALE_DOWN_WORKLOADS)
    d.step(
        EventKind.PERMANENT_FAILURE,
        message="fenced: epoch 3 below fence 4",
        cluster="site-a",
        superseded=Superseded.FENCED,
    )
    run = d.finish()
    status = failover_status(manifest(), [run], NOW)
    assert status["status"] == "FAILED"
    assert conditions(status)["Failed"] == ("True", "Superseded")
    assert conditions(status)["OperatorActionRequired"] == ("False", "NoActionNeeded")
    assert not any(key.startswith("undo:") and key != "undo:0:abort" for key in run.steps)


def test_several_groups_aggregate() -> None:
    shop, other = driver("shop", "billing"), driver("shop", "billing", group=billing())
    shop.start()
    shop.finish()
    other.start()
    other.until(Step.DISABLE_NETWORK)
    obj = manifest("shop", "billing")
    status = failover_status(obj, [shop.run, other.run], NOW)
    assert (status["status"], status["state"]) == ("IN_PROGRESS", "DISABLING_NETWORK")
    assert [g["status"] for g in status["failoverGroups"]] == ["SUCCESS", "IN_PROGRESS"]
    assert status["message"] == "shop/shop: moved to site-b; shop/billing: step disable_network on site-a"

    other.step(EventKind.PERMANENT_FAILURE, message="lock held", cluster="site-a")
    other.finish()
    status = failover_status(obj, [other.run, shop.run], NOW)
    assert (status["status"], status["state"]) == ("FAILED", "FAILED")
    assert [g["name"] for g in status["failoverGroups"]] == ["shop", "billing"]  # spec order
    assert status["message"].startswith("shop/shop: moved to site-b; shop/billing: failed at step")
    assert status["metrics"]["totalFailoverTimeSeconds"] == max(
        shop.run.total_seconds() or 0, other.run.total_seconds() or 0
    )
    # A group whose run is not there yet is PENDING and keeps the Failover IN_PROGRESS.
    status = failover_status(obj, [shop.run], NOW)
    assert status["status"] == "IN_PROGRESS"
    assert status["failoverGroups"][1] == {"name": "billing", "namespace": "shop", "status": "PENDING"}


def test_runs_of_groups_it_does_not_list_are_ignored_and_the_newest_run_of_a_group_counts() -> None:
    d = driver()
    d.start()
    older = d.run.model_copy(update={"created_at": T0 - 10, "run_id": "older", "message": "old"})
    other = driver("billing", group=billing()).run
    status = failover_status(manifest(), [older, d.run, other], NOW)
    assert [g["runId"] for g in status["failoverGroups"]] == [d.run.run_id]


def test_the_same_runs_give_the_same_status_and_times_move_only_on_a_flip() -> None:
    d = driver()
    d.start()
    first = failover_status(manifest(), [d.run], NOW)
    obj = manifest(status=first)
    assert not needs_write(obj, failover_status(obj, [d.run], NOW + 50))
    d.finish()
    done = failover_status(obj, [d.run], NOW + 60)
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times["Failed"] == times["OperatorActionRequired"] == "2030-03-17T17:48:20Z"  # unchanged
    assert times["Ready"] == times["Progressing"] == "2030-03-17T17:49:20Z"  # flipped


def test_events_are_deterministic_and_cover_compensation() -> None:
    d = driver()
    d.start()
    started = run_events(manifest(), d.run, NOW, instance="w")
    assert [(e["reason"], e["action"]) for e in started] == [("StepStarted", "validate")]
    assert started[0]["involvedObject"]["uid"] == "u-1"
    d.until(Step.SCALE_DOWN_WORKLOADS)
    d.step(EventKind.PERMANENT_FAILURE, message="RBAC forbids patch", cluster="site-a")
    run: Run = d.finish()
    events = {e["metadata"]["name"]: e for e in run_events(manifest(), run, NOW, instance="w")}
    assert events == {e["metadata"]["name"]: e for e in run_events(manifest(), run, NOW + 9, instance="w")}
    failed = events[event_name("move-shop", run.run_id, "scale_down_workloads", "failed")]
    assert (failed["type"], failed["reason"]) == ("Warning", "StepFailed")
    assert any(e["action"].startswith("undo:") for e in events.values())
    assert events[event_name("move-shop", run.run_id, "run", "failed")]["reason"] == "FailoverFailed"


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
