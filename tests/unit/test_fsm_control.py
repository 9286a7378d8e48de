"""Operator controls as pure decisions (fsm.control): what is allowed when, and what applying does."""

from __future__ import annotations

import pytest

from fsm.audit import ControlAction, ControlOutcome
from fsm.control import apply_controls, decide_at_boundary, refusal, refused, request
from fsm.decide import Decision, Event, EventKind, decide
from fsm.plan import Phase, Step
from fsm.run import Run, RunStatus
from fsm.status import failover_status, run_events, step_events
from tests.unit.test_plan_and_decide import make_run

PAUSE, RESUME, CANCEL = ControlAction.PAUSE, ControlAction.RESUME, ControlAction.CANCEL
PAUSE_ACTION, CANCEL_ACTION = PAUSE, CANCEL
RETRY, SKIP = ControlAction.RETRY_STEP, ControlAction.SKIP_STEP


def succeed(run: Run, now: float) -> Run:
    assert run.dispatch is not None
    event = Event(kind=EventKind.SUCCEEDED, step=run.dispatch.step, ticket=run.dispatch.ticket)
    return decide_at_boundary(decide(run, event, now), now, outcome=True).run


def at(step: Step, mode: str = "CONSISTENCY") -> Run:
    """A run started at t=10 and moved (by successes at t=10) to ``step``."""
    run = decide(make_run(mode), Event(kind=EventKind.START), 10.0).run
    while run.at_step is not step:
        run = succeed(run, 10.0)
    return run


def ask(run: Run, action: ControlAction, now: float = 20.0, **options: object) -> Run:
    assert refusal(run, action, now=now, **options) is None  # type: ignore[arg-type]
    return request(run, action=action, who="alice", why="testing", now=now, **options)  # type: ignore[arg-type]


def boundary(run: Run, now: float) -> Decision:
    return apply_controls(Decision(run=run, changed=False, reason=""), now)


def test_pause_holds_the_next_step_and_resume_sends_it_with_deadlines_moved() -> None:
    run = at(Step.SCALE_DOWN_WORKLOADS)
    asked = ask(run, PAUSE)
    assert asked.controls[-1].pending and not asked.paused
    # The step in flight reports back: the pause applies at that boundary and nothing is sent.
    paused = succeed(asked, 20.0)
    assert paused.paused and paused.at_step is Step.SUSPEND_FLUX
    assert paused.journal_sequence == asked.journal_sequence + 1  # journaled: a rebuilt run stays paused
    assert paused.controls[-1].outcome is ControlOutcome.APPLIED
    assert paused.dispatch is not None and not paused.expects(paused.dispatch.step, paused.dispatch.ticket)
    # A redrive of the held message finds nothing to do.
    redrive = Event(kind=EventKind.REDRIVE, step=paused.dispatch.step, ticket=paused.dispatch.ticket)
    assert not decide(paused, redrive, 500.0).changed
    resumed = boundary(ask(paused, RESUME, now=120.0), 120.0)
    assert not resumed.run.paused
    assert resumed.dispatch is not None and resumed.dispatch.step is Step.SUSPEND_FLUX
    assert resumed.dispatch.ticket > paused.dispatch.ticket and resumed.dispatch.countdown == 0
    assert resumed.run.deadline_at == pytest.approx(paused.deadline_at + 100.0)


def test_resume_without_pause_and_double_pause_are_refused() -> None:
    run = at(Step.WAIT_SCALED_DOWN)
    assert refusal(run, RESUME, now=20.0) == f"run {run.run_id} is not paused: nothing to resume"
    asked = ask(run, PAUSE)
    assert "already paused" in str(refusal(asked, PAUSE, now=20.0))
    assert refusal(asked, RESUME, now=20.0) is None  # a pending pause can be taken back


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_cancel_before_the_point_of_no_return_compensates_and_ends_cancelled(mode: str) -> None:
    run = at(Step.WAIT_SCALED_DOWN if mode == "CONSISTENCY" else Step.WAIT_VOLUMES_PROMOTED, mode)
    decision = boundary(ask(run, CANCEL), 20.0)
    cancelled = decision.run
    assert cancelled.state is Phase.COMPENSATING and cancelled.failure and cancelled.failure.cancelled
    undo = [a.step.value for a in cancelled.compensation]
    assert undo[-1] == "abort" and len(undo) > 1  # effects attempted so far are undone
    assert decision.dispatch is not None and decision.dispatch.step is cancelled.compensation[0].step
    while not cancelled.terminal:
        cancelled = succeed(cancelled, 30.0)
    assert cancelled.status is RunStatus.CANCELLED and cancelled.state_name == "CANCELLED"
    assert "cancelled by alice (testing)" in cancelled.message


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_a_cancel_ends_the_wait_it_interrupted_as_cancelled(mode: str) -> None:
    step = Step.WAIT_SCALED_DOWN if mode == "CONSISTENCY" else Step.WAIT_VOLUMES_PROMOTED
    run = at(step, mode)
    waiting = decide(run, Event(kind=EventKind.WAITING, step=step, ticket=run.dispatch.ticket), 15.0).run  # type: ignore[union-attr]
    assert waiting.steps[step.value].outcome is None and waiting.steps[step.value].checks == 1
    cancelled = boundary(ask(waiting, CANCEL), 20.0).run
    record = cancelled.steps[step.value]
    assert record.outcome == "cancelled" and record.finished_at == 20.0, record
    assert "cancelled by alice (testing)" in record.message
    events = [e for e in step_events(cancelled, 21.0) if e.key == step.value]
    assert [e.reason for e in events] == ["StepStarted", "StepCancelled"] and events[-1].warning
    while not cancelled.terminal:
        cancelled = succeed(cancelled, 30.0)
    assert cancelled.steps[step.value].outcome == "cancelled"  # not overwritten by the undo


@pytest.mark.parametrize(
    ("mode", "step"), [("CONSISTENCY", Step.WAIT_VOLUMES_PROMOTED), ("UPTIME", Step.SCALE_DOWN_WORKLOADS)]
)
def test_cancel_past_the_point_of_no_return_is_refused_with_the_resolve_hint(mode: str, step: Step) -> None:
    run = at(step, mode)
    why = refusal(run, CANCEL, now=20.0)
    assert why is not None and "point of no return" in why
    assert "failoverctl group resolve shop/shop --active CLUSTER --reason TEXT" in why


def test_a_cancel_overtaken_by_the_point_of_no_return_is_refused_when_applied() -> None:
    run = at(Step.PROMOTE_VOLUMES)  # dispatched, not attempted yet: still before the point
    asked = ask(run, CANCEL)
    after = succeed(asked, 20.0)  # the promotion ran: now past it
    assert after.at_step is Step.WAIT_VOLUMES_PROMOTED and after.failure is None
    assert after.controls[-1].outcome is ControlOutcome.REFUSED
    assert "point of no return" in after.controls[-1].message
    assert after.dispatch is not None  # the run continues


def test_retry_step_resets_the_wait_and_is_refused_when_nothing_waits() -> None:
    run = at(Step.WAIT_SCALED_DOWN)
    assert run.dispatch is not None
    waiting = Event(
        kind=EventKind.WAITING, step=Step.WAIT_SCALED_DOWN, ticket=run.dispatch.ticket, message="2 pods"
    )
    for _ in range(3):
        run = decide(run, waiting.model_copy(update={"ticket": run.dispatch.ticket}), 11.0).run  # type: ignore[union-attr]
    assert run.dispatch is not None and run.dispatch.countdown > 1
    assert run.steps["wait_scaled_down"].checks == 3
    retried = boundary(ask(run, RETRY, now=11.0), 11.0)
    assert (
        retried.dispatch is not None and retried.dispatch.countdown == 0 and retried.dispatch.due_at == 11.0
    )
    assert retried.run.steps["wait_scaled_down"].checks == 0
    assert retried.run.controls[-1].outcome is ControlOutcome.APPLIED
    fresh = at(Step.WAIT_VOLUMES_DEMOTED)  # dispatched, never reported back: nothing to retry yet
    assert "has not reported back yet" in str(refusal(fresh, RETRY, now=11.0))


def test_skip_step_only_wait_steps_and_volume_guards_only_with_force() -> None:
    run = at(Step.SCALE_DOWN_WORKLOADS)
    assert "only wait steps" in str(refusal(run, SKIP, now=20.0, step=Step.SCALE_DOWN_WORKLOADS))
    assert "only the step it waits in" in str(refusal(run, SKIP, now=20.0, step=Step.WAIT_READY))
    guarded = at(Step.WAIT_VOLUMES_DEMOTED)
    why = refusal(guarded, SKIP, now=20.0, step=Step.WAIT_VOLUMES_DEMOTED)
    assert why is not None and "two writers" in why and "--force" in why
    forced = boundary(ask(guarded, SKIP, step=Step.WAIT_VOLUMES_DEMOTED, force=True), 20.0).run
    record = forced.steps["wait_volumes_demoted"]
    assert record.outcome == "skipped" and "FORCED" in record.message and "two writers" in record.message
    assert forced.at_step is Step.MARK_VOLUMES_RELEASED
    plain = boundary(ask(at(Step.WAIT_READY), SKIP, step=Step.WAIT_READY), 20.0).run
    assert plain.at_step is Step.ENABLE_NETWORK and plain.steps["wait_ready"].outcome == "skipped"


def test_nothing_is_allowed_on_an_ended_run_or_a_compensating_cancel() -> None:
    run = at(Step.WAIT_SCALED_DOWN)
    cancelled = boundary(ask(run, CANCEL), 20.0).run
    assert "already compensating" in str(refusal(cancelled, CANCEL, now=21.0))
    assert "compensating" in str(refusal(cancelled, PAUSE, now=21.0))
    while not cancelled.terminal:
        cancelled = succeed(cancelled, 30.0)
    for action in ControlAction:
        assert "already ended CANCELLED" in str(refusal(cancelled, action, now=40.0, step=Step.WAIT_READY))


def test_status_conditions_and_events_say_who_and_why() -> None:
    obj = {
        "metadata": {"name": "move-shop", "namespace": "shop"},
        "spec": {"failoverGroups": [{"name": "shop"}]},
    }
    paused = succeed(ask(at(Step.WAIT_SCALED_DOWN), PAUSE), 20.0)
    status = failover_status(obj, [paused], 30.0)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["state"] == "PAUSED"
    assert conditions["Paused"]["status"] == "True" and "alice (testing)" in conditions["Paused"]["message"]
    assert conditions["OperatorControl"]["reason"] == "PauseApplied"
    reasons = [e["reason"] for e in run_events(obj, paused, 30.0, instance="t")]
    assert "ControlRequested" in reasons and "ControlApplied" in reasons
    denied = refused(paused, action=CANCEL, who="bob", why="x", now=31.0, message="no")
    conditions = {c["type"]: c for c in failover_status(obj, [denied], 32.0)["conditions"]}
    assert (
        conditions["OperatorControl"]["status"] == "False"
        and conditions["OperatorControl"]["reason"] == "CancelRefused"
    )


def test_a_cancelled_failover_aggregates_to_cancelled() -> None:
    obj = {
        "metadata": {"name": "move-shop", "namespace": "shop"},
        "spec": {"failoverGroups": [{"name": "shop"}]},
    }
    run = boundary(ask(at(Step.WAIT_SCALED_DOWN), CANCEL), 20.0).run
    while not run.terminal:
        run = succeed(run, 30.0)
    status = failover_status(obj, [run], 40.0)
    assert status["status"] == "CANCELLED" and status["state"] == "CANCELLED"
    assert any(e["reason"] == "FailoverCancelled" for e in run_events(obj, run, 40.0, instance="t"))


def test_annotations_ask_once_and_resume_only_their_own_pause() -> None:
    from fsm import control_annotations as annotation
    from fsm.control_annotations import REQUESTED_BY, SKIP_STEP, requested_by, wanted_controls

    run = at(Step.WAIT_SCALED_DOWN)
    assert [w.action for w in wanted_controls({annotation.PAUSE: "true"}, run)] == [PAUSE_ACTION]
    by_annotation = request(run, action=PAUSE, who="bot", why="x", now=20.0, source="annotation")
    assert wanted_controls({annotation.PAUSE: "true"}, by_annotation) == []  # asked already: not again
    assert [w.action for w in wanted_controls({}, by_annotation)] == [RESUME]
    assert [w.action for w in wanted_controls({annotation.PAUSE: "false"}, by_annotation)] == [RESUME]
    by_cli = request(run, action=PAUSE, who="alice", why="x", now=20.0)
    assert wanted_controls({}, by_cli) == []  # a pause asked with failoverctl is not the annotation's
    cancel = wanted_controls({annotation.CANCEL: "wrong target"}, run)
    assert [(w.action, w.why) for w in cancel] == [(CANCEL_ACTION, "wrong target")]
    [skip] = wanted_controls({SKIP_STEP: "wait_scaled_down"}, run)
    assert skip.step is Step.WAIT_SCALED_DOWN and not skip.force
    [unknown] = wanted_controls({SKIP_STEP: "nope"}, run)
    assert unknown.unknown == "nope"
    obj = {
        "metadata": {
            "managedFields": [
                {
                    "manager": "old",
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{annotation.PAUSE}": {}}}},
                },
                {
                    "manager": "argocd",
                    "time": "2026-02-01T00:00:00Z",
                    "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{annotation.PAUSE}": {}}}},
                },
            ]
        }
    }
    assert requested_by(obj) == "argocd (field manager)"
    assert requested_by({"metadata": {"annotations": {REQUESTED_BY: "jane"}}}) == "jane"
    assert requested_by({"metadata": {}}) == "annotation"


def test_a_cancelled_failover_is_finished_for_the_watcher() -> None:
    from producers.decisions import FailoverAction, decide_failover

    obj = {"metadata": {"name": "move-shop", "namespace": "shop"}, "status": {"status": "CANCELLED"}}
    assert decide_failover(obj).action is FailoverAction.SKIP


def test_a_cancelled_run_has_a_report_with_the_interrupted_wait_and_its_undo() -> None:
    from fsm.report import Verdict, drill_report, report_from_run
    from producers.report_page import render

    run = at(Step.WAIT_SCALED_DOWN)
    waiting = decide(
        run, Event(kind=EventKind.WAITING, step=Step.WAIT_SCALED_DOWN, ticket=run.dispatch.ticket), 15.0
    ).run  # type: ignore[union-attr]
    cancelled = boundary(ask(waiting, CANCEL), 20.0).run
    while not cancelled.terminal:
        cancelled = succeed(cancelled, 30.0)
    report = report_from_run(cancelled, objective=600.0)
    assert report.outcome == "CANCELLED" and report.downtime_seconds is None
    verdict, why = report.verdict
    assert verdict is Verdict.FAIL and "ended CANCELLED" in why and "cancelled by alice" in why
    waits = {w.key: w.outcome for w in report.waits}
    assert waits["wait_scaled_down"] == "cancelled"
    assert any(s.key.startswith("undo:") for s in report.steps)
    page = render(drill_report("report", "shop/shop", [report], 600.0, 40.0))
    assert "CANCELLED" in page and "cancelled" in page and 'data-verdict="FAIL"' in page
