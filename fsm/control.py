"""Operator controls of a run in flight: which are allowed when, and what applying one does. Pure.

A control is asked for (``failoverctl run pause|resume|cancel|retry-step|skip-step`` or an annotation
on the Failover) and checked by :func:`refusal` at once: a refused request changes nothing and says
why. An accepted one is appended to the run (:func:`request`, outcome ``requested``) and applied by
the engine at the next step boundary (:func:`apply_controls`): after the step in flight reported back,
or while no step runs (waiting for a poll or a retry, or paused). It is checked again then, since the
run may have moved on meanwhile (a cancel asked while the point-of-no-return step was running is
refused once that step has been attempted), and recorded as ``applied`` or ``refused`` with the reason.

- **pause**: the run finishes the step it is in and holds its next message (its dispatch stays, no
  message is sent; :meth:`fsm.run.Run.expects` is false while paused). The sweep renews its lease and
  never re-sends or times it out; on **resume** the run's and the step's deadlines are extended by the
  time paused, and the held step is sent again at once with a new ticket.
- **cancel**: before the kind's point of no return, the run fails as a failure would
  (:func:`fsm.decide.compensation_for`) and ends CANCELLED; from the point of no return on it is
  refused with the ``failoverctl group resolve`` hint, and the run continues.
- **retry-step**: the step the run waits to check or retry (it reported back at least once) is sent
  again now (its check and error counts start over, so its poll interval and error budget do too; its
  deadline does not move). The message it was waiting for becomes stale (a new ticket).
- **skip-step STEP**: only the wait step the run is at; a wait that guards volumes only with force.
"""

from __future__ import annotations

from dataclasses import replace

from fsm.audit import ControlAction, ControlOutcome, ControlRecord
from fsm.decide import Decision, EventKind, JournalMark, compensation_for, settle
from fsm.machine import fire
from fsm.plan import CATALOGUE, POINT_OF_NO_RETURN, Phase, Step, StepType
from fsm.run import Dispatch, Failure, Run, StepRecord, resolve_command

# The wait steps that keep two writers apart (or stop workloads starting on volumes not ready):
# skipping one needs --force spelled out, and the reason is said with the refusal and the record.
GUARDS_VOLUMES: dict[Step, str] = {
    Step.WAIT_VOLUMES_DEMOTED: "until the source's VolumeReplications report secondary the source may "
    "still write to its volumes: promoting the target after skipping this can make two writers",
    Step.WAIT_VOLUMES_RELEASED: "the release record is the source's word that it let go of its volumes: "
    "promoting the target without it can make two writers",
    Step.WAIT_VOLUMES_PROMOTED: "the target's volumes may not be primary yet: its workloads would start on "
    "read-only or stale volumes",
    Step.VERIFY_VOLUMES: "a volume not verified may be degraded or not primary: workloads would start on it",
}


def _at(run: Run) -> str:
    """The step (or undo action) the run is at, by its record key."""
    return run.step_key


def refusal(
    run: Run,
    action: ControlAction,
    *,
    now: float,
    step: Step | None = None,
    force: bool = False,
    requesting: bool = True,
) -> str | None:
    """Why ``action`` cannot be applied to ``run`` now (one sentence), or None. ``requesting``: the
    check made when it is asked (pending requests count, a retry needs a step that waits); else the
    check made when it is applied."""
    if run.terminal:
        return f"run {run.run_id} already ended {run.status.value}: nothing to {action.value}"
    if run.state is Phase.PENDING or run.dispatch is None:
        return f"run {run.run_id} has not started yet: try again in a moment"
    pending = {c.action for c in run.pending_controls} if requesting else set()
    if ControlAction.CANCEL in pending:
        return f"run {run.run_id} has a cancel pending: no other control until it is applied"
    checks = {
        ControlAction.PAUSE: _pause_refusal,
        ControlAction.RESUME: _resume_refusal,
        ControlAction.CANCEL: _cancel_refusal,
        ControlAction.RETRY_STEP: _retry_refusal,
    }
    if action is ControlAction.SKIP_STEP:
        return _skip_refusal(run, step, force=force)
    return checks[action](run, pending, now if requesting else None)


def _paused_or_pausing(run: Run, pending: set[ControlAction]) -> bool:
    order = [
        c.action for c in run.pending_controls if c.action in (ControlAction.PAUSE, ControlAction.RESUME)
    ]
    if pending and order:
        return order[-1] is ControlAction.PAUSE
    return run.paused


def _pause_refusal(run: Run, pending: set[ControlAction], _now: float | None) -> str | None:
    if run.state is Phase.COMPENSATING:
        return f"run {run.run_id} is compensating: its undo actions run to the end and cannot be paused"
    if _paused_or_pausing(run, pending):
        return f"run {run.run_id} is already paused (or a pause is pending)"
    return None


def _resume_refusal(run: Run, pending: set[ControlAction], _now: float | None) -> str | None:
    if not _paused_or_pausing(run, pending):
        return f"run {run.run_id} is not paused: nothing to resume"
    return None


def _cancel_refusal(run: Run, _pending: set[ControlAction], _now: float | None) -> str | None:
    no_return = POINT_OF_NO_RETURN[run.kind]
    if no_return is None:
        return f"a {run.kind.value} run is never undone: it only makes the group safer; let it finish"
    if run.state is Phase.COMPENSATING:
        return f"run {run.run_id} is already compensating ({run.message}): it ends on its own"
    if run.past_point_of_no_return:
        return (
            f"run {run.run_id} is past its point of no return ({no_return.value}): undoing it now could "
            f"make two writers or leave none serving, so it continues; if it must stop, let it finish or "
            f"fail, then settle the group with `{resolve_command(run.group)}`"
        )
    return None


def _retry_refusal(run: Run, _pending: set[ControlAction], now: float | None) -> str | None:
    if run.paused:
        return f"run {run.run_id} is paused: resume it (the held step is tried again at once)"
    if now is not None and _at(run) not in run.steps:
        return f"step {_at(run)} has not reported back yet (it runs now): nothing to retry"
    return None


def _skip_refusal(run: Run, step: Step | None, *, force: bool) -> str | None:
    if step is None:
        return "skip-step needs the step to skip"
    info = CATALOGUE[step]
    if info.type is not StepType.WAIT:
        return (
            f"{step.value} is a{'n' if info.type is StepType.EFFECT else ''} {info.type.value} step: only "
            "wait steps can be skipped (the steps after it rely on what it changes or records)"
        )
    if run.at_step is not step:
        return (
            f"run {run.run_id} is at {_at(run)}, not {step.value}: only the step it waits in can be skipped"
        )
    if step in GUARDS_VOLUMES and not force:
        return f"skipping {step.value} is unsafe: {GUARDS_VOLUMES[step]}; to skip it anyway, say --force"
    return None


def request(
    run: Run,
    *,
    action: ControlAction,
    who: str,
    why: str,
    now: float,
    step: Step | None = None,
    force: bool = False,
    source: str = "cli",
) -> Run:
    """``run`` with a new control request appended (outcome ``requested``). Pure; the caller checked
    :func:`refusal` first and commits the result by compare-and-set."""
    record = ControlRecord(
        id=len(run.controls) + 1,
        action=action,
        who=who,
        why=why,
        at=now,
        step=step.value if step is not None else _at(run),
        force=force,
        source=source,
    )
    return run.model_copy(update={"controls": [*run.controls, record]})


def refused(
    run: Run, *, action: ControlAction, who: str, why: str, now: float, message: str, **options: object
) -> Run:
    """``run`` with a request recorded as refused at once (the watcher records the annotations it could
    not honour, so that the Failover's conditions say why and the annotation is not tried again)."""
    asked = request(run, action=action, who=who, why=why, now=now, **options)  # type: ignore[arg-type]
    return _decided(asked, asked.controls[-1], ControlOutcome.REFUSED, message, now)


def apply_controls(decision: Decision, now: float) -> Decision:
    """Apply the pending controls of ``decision.run`` in the order asked, at this step boundary.

    ``decision`` is what just happened at the boundary (a step's outcome, or nothing: ``changed``
    False). The result sends the message of the last control that re-dispatched a step, else the
    outcome's; nothing while the run is paused or once it ended.
    """
    run = decision.run
    dispatch, reasons, journal = (
        decision.dispatch,
        [decision.reason] if decision.reason else [],
        list(decision.journal),
    )
    paused_before = run.paused
    for record in run.pending_controls:
        step = Step(record.step) if record.action is ControlAction.SKIP_STEP and record.step else None
        why_not = refusal(run, record.action, now=now, step=step, force=record.force, requesting=False)
        if why_not is None and record.action is ControlAction.RETRY_STEP and record.step != _at(run):
            why_not = f"the run moved on from {record.step} to {_at(run)} before the retry applied"
        if why_not is not None:
            run = _decided(run, record, ControlOutcome.REFUSED, why_not, now)
            reasons.append(f"{record.action.value} refused: {why_not}")
            continue
        applied = _APPLY[record.action](run, record, now)
        run = _decided(applied.run, record, ControlOutcome.APPLIED, applied.reason, now)
        reasons.append(f"{record.action.value} by {record.who}: {applied.reason}")
        journal += applied.journal
        dispatch = applied.dispatch or dispatch
    stage = run.stage
    if paused_before != run.paused and len(journal) == len(decision.journal) and stage is not None:
        # A pause (or its end) is journaled, so that a run rebuilt from DynamoDB stays paused.
        sequence = run.journal_sequence + 1
        run = run.model_copy(update={"journal_sequence": sequence})
        journal.append(JournalMark(stage=stage, state=run.state, sequence=sequence))
    if run.paused or run.terminal:
        dispatch = None
    return replace(
        decision, run=run, changed=True, reason="; ".join(reasons), dispatch=dispatch, journal=journal
    )


def _decided(run: Run, record: ControlRecord, outcome: ControlOutcome, message: str, now: float) -> Run:
    done = record.model_copy(update={"outcome": outcome, "decided_at": now, "message": message})
    return run.model_copy(update={"controls": [done if c.id == record.id else c for c in run.controls]})


def _redispatch(run: Run, now: float) -> Dispatch:
    assert run.dispatch is not None
    return Dispatch(step=run.dispatch.step, ticket=run.tickets + 1, countdown=0.0, due_at=now)


def _pause(run: Run, _record: ControlRecord, now: float) -> Decision:
    held = run.dispatch.model_copy(update={"due_at": now}) if run.dispatch else None
    new = run.model_copy(update={"paused_at": now, "dispatch": held})
    return Decision(run=new, changed=True, reason=f"paused before {_at(run)}")


def _resume(run: Run, _record: ControlRecord, now: float) -> Decision:
    assert run.paused_at is not None
    paused_for = max(0.0, now - run.paused_at)
    steps = dict(run.steps)
    current = steps.get(_at(run))
    if current is not None and current.started_at is not None and current.finished_at is None:
        steps[_at(run)] = current.model_copy(update={"started_at": current.started_at + paused_for})
    dispatch = _redispatch(run, now)
    new = run.model_copy(
        update={
            "paused_at": None,
            "deadline_at": run.deadline_at + paused_for,
            "steps": steps,
            "tickets": dispatch.ticket,
            "dispatch": dispatch,
        }
    )
    reason = f"resumed after {paused_for:.0f}s paused (deadlines extended by as much); next {_at(run)}"
    return Decision(run=new, changed=True, reason=reason, dispatch=dispatch)


def _cancel(run: Run, record: ControlRecord, now: float) -> Decision:
    step = run.current_step
    assert step is not None
    failure = Failure(step=step, cause=f"cancelled by {record.who} ({record.why})", cancelled=True)
    new = run.model_copy(
        update={
            "steps": _interrupted(run, f"cancelled by {record.who} ({record.why})", now),
            "failure": failure,
            "paused_at": None,
            "message": f"cancelled by {record.who} ({record.why}) at step {step.value}; compensated",
        }
    )
    new = new.model_copy(
        update={
            "compensation": compensation_for(new),
            "compensation_index": 0,
            "state": fire(run.kind, run.state, EventKind.PERMANENT_FAILURE),
        }
    )
    decided = settle(run, new, now, f"cancelled at {step.value}; compensating")
    return replace(decided, reason=f"cancelled at {step.value}: undoing what was done, then CANCELLED")


def _interrupted(run: Run, message: str, now: float) -> dict[str, StepRecord]:
    """The run's step records with the step it was at (checked or tried at least once, between two
    attempts) ended as ``cancelled``: a cancel is a step boundary, so no attempt of it is running."""
    steps = dict(run.steps)
    current = steps.get(_at(run))
    if current is not None and current.outcome is None:
        steps[_at(run)] = current.model_copy(
            update={"finished_at": now, "outcome": "cancelled", "message": f"{current.message}; {message}"}
        )
    return steps


def _retry(run: Run, _record: ControlRecord, now: float) -> Decision:
    dispatch = _redispatch(run, now)
    steps = dict(run.steps)
    current = steps.get(_at(run))
    if current is not None:
        steps[_at(run)] = current.model_copy(update={"checks": 0, "errors": 0})
    new = run.model_copy(update={"steps": steps, "tickets": dispatch.ticket, "dispatch": dispatch})
    return Decision(run=new, changed=True, reason=f"{_at(run)} tried again now", dispatch=dispatch)


def _skip(run: Run, record: ControlRecord, now: float) -> Decision:
    step = run.at_step
    assert step is not None
    before = run.steps.get(step.value, StepRecord())
    danger = f"; FORCED past a volume guard: {GUARDS_VOLUMES[step]}" if step in GUARDS_VOLUMES else ""
    message = f"skipped by {record.who} ({record.why}){danger}"
    skipped = before.model_copy(
        update={
            "started_at": before.started_at or now,
            "finished_at": now,
            "outcome": "skipped",
            "message": message,
        }
    )
    new = run.model_copy(
        update={"steps": {**run.steps, step.value: skipped}, "state": fire(run.kind, step, EventKind.SKIPPED)}
    )
    decided = settle(run, new, now, f"{step.value} skipped by {record.who}")
    return replace(decided, reason=f"{step.value} skipped{danger}")


_APPLY = {
    ControlAction.PAUSE: _pause,
    ControlAction.RESUME: _resume,
    ControlAction.CANCEL: _cancel,
    ControlAction.RETRY_STEP: _retry,
    ControlAction.SKIP_STEP: _skip,
}


def decided_between(before: Run, after: Run) -> list[ControlRecord]:
    """The control requests pending in ``before`` that ``after`` applied or refused (what one committed
    decision did with the operator's requests; metrics and Flower count each once). Pure."""
    pending = {c.id for c in before.pending_controls}
    return [c for c in after.controls if c.id in pending and not c.pending]


def decide_at_boundary(decision: Decision, now: float, *, outcome: bool) -> Decision:
    """``decision`` with the pending controls applied when it marks a step boundary: a step's outcome
    that changed the run (``outcome``), never a redrive (its step may still be running)."""
    if not outcome or not decision.changed or not decision.run.pending_controls:
        return decision
    return apply_controls(decision, now)
