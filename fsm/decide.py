"""``decide(run, event, now)``: what an event means for a run, as data with a reason.

Pure (after Patroni's ``run_cycle``): no I/O, no clock (``now`` is passed in), no randomness (the
jitter is in the event). Runs are immutable: it returns a :class:`Decision` holding a *new* run value,
the one message to send next (if any), the journal marks for stage boundaries crossed, and a sentence
saying why. The worker that called it commits the run by compare-and-set, writes the journal and sends
the message. The state a run moves to is looked up in :data:`fsm.machine.TABLE`, compiled from the
kind's ``transitions`` machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from fsm.machine import EventKind as EventKind  # noqa: PLC0414 (re-exported: one name per idea)
from fsm.machine import fire
from fsm.plan import CATALOGUE, POINT_OF_NO_RETURN, Phase, PlanKind, Stage, State, Step, StepType, Timing
from fsm.run import (
    CompensationAction,
    Dispatch,
    Failure,
    Run,
    RunStatus,
    StepRecord,
    Superseded,
    resolve_command,
)

# A message re-sent this many times without any worker processing it fails the step: its queue has
# no consumer (a lost site's per-cluster queue) or every worker that takes it dies.
MAX_REDRIVES = 10


class Updates(BaseModel):
    """What a finished step hands back to the run (a token, replica counts, a reconcile stamp)."""

    model_config = ConfigDict(frozen=True)

    token: int | None = None
    lease_expires_at: float | None = None
    replicas: dict[str, int] | None = None
    requested_at: str | None = None


class Event(BaseModel):
    """What happened: a step's outcome as its worker reported it, a start or a redrive.

    ``superseded``: the step found that the run no longer owns its group (its lease was lost, or a
    cluster fenced its write); another run may own it, so nothing may be undone (see
    :func:`compensation_for`). ``max_attempts`` overrides the timing's error budget for this failure (a
    lost source fails fast: :mod:`fsm.unreachable`).
    """

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    step: Step | None = None
    ticket: int | None = None
    message: str = ""
    cluster: str | None = None
    obj: str | None = None
    retry_after: float | None = None
    jitter: float = 0.5
    started_at: float | None = None
    updates: Updates | None = None
    superseded: Superseded | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class JournalMark:
    """A stage boundary crossed: ``stage`` ended (done or abandoned) as the run entered ``state``."""

    stage: Stage
    state: State
    sequence: int


@dataclass(frozen=True)
class Decision:
    run: Run
    changed: bool
    reason: str
    dispatch: Dispatch | None = None
    journal: list[JournalMark] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.run.terminal


def decide(run: Run, event: Event, now: float) -> Decision:
    """Apply ``event`` to ``run`` at time ``now``. Pure; see the module docstring."""
    if event.kind is EventKind.START:
        return _start(run, now)
    step, ticket = event.step, event.ticket
    if step is None or ticket is None or not run.expects(step, ticket):
        waiting = f"{run.dispatch.step.value} ticket {run.dispatch.ticket}" if run.dispatch else "nothing"
        return _ignore(
            run,
            f"stale message for {step.value if step else None} ticket {ticket}: run is "
            f"{run.state_name} and waits for {waiting}; ignored",
        )
    if event.kind is EventKind.REDRIVE:
        return _redrive(run, now)
    return _outcome(run, event, step, now)


def _ignore(run: Run, reason: str) -> Decision:
    return Decision(run=run, changed=False, reason=reason)


def _outcome(run: Run, event: Event, step: Step, now: float) -> Decision:
    """A step reported back: count the attempt, then move on, check again, retry or fail."""
    record = run.steps.get(run.step_key, StepRecord())
    started = record.started_at
    if started is None:
        started = event.started_at if event.started_at is not None else now
    record = record.model_copy(update={"attempts": record.attempts + 1, "started_at": started})
    new = _with_record(run, record)
    if event.kind is EventKind.SUCCEEDED:
        # Even a success that came too late changed something (a lock taken, replicas counted):
        # the run must know, or its compensation would not release what it holds.
        new = _apply(new, event.updates)
    elif event.updates is not None and event.updates.lease_expires_at is not None:
        # A lease renewed by a step that did not succeed is renewed all the same.
        new = new.model_copy(update={"lease_expires_at": event.updates.lease_expires_at})
    kind, message = _overdue(run, event, now)
    deadline = new.step_deadline
    assert deadline is not None  # the record has just been started
    if kind is EventKind.WAITING:
        record = record.model_copy(update={"checks": record.checks + 1, "errors": 0, "message": message})
        if now < deadline:
            # The error budget limits consecutive failures: a good check resets it.
            delay = min(run.timing.poll_delay(record.checks), deadline - now)
            return _again(
                run, _with_record(new, record), now, delay=delay, kind=kind, reason=f"waiting: {message}"
            )
        kind = EventKind.PERMANENT_FAILURE
        message = f"not done within the step deadline of {run.step_timeout:g}s: {message}"
    if kind is EventKind.TEMPORARY_FAILURE:
        record = record.model_copy(update={"errors": record.errors + 1, "message": message})
        budget = event.max_attempts or run.timing.max_attempts
        if record.errors < budget and now < deadline:
            delay = run.timing.retry_delay(record.errors, event.jitter, event.retry_after)
            reason = f"attempt {record.errors} of {budget} failed ({message}); retrying in {delay:.1f}s"
            return _again(run, _with_record(new, record), now, delay=delay, kind=kind, reason=reason)
        kind = EventKind.PERMANENT_FAILURE
        if record.errors >= budget:
            message = f"gave up after {record.errors} attempts: {message}"
        else:
            message = f"still failing at the step deadline of {run.step_timeout:g}s: {message}"
    if kind in (EventKind.SUCCEEDED, EventKind.SKIPPED):
        return _step_ended(run, new, record, event, kind=kind, message=message, now=now)
    record = record.model_copy(update={"finished_at": now, "message": message, "outcome": "failed"})
    return _fail(run, _with_record(new, record), event, step=step, message=message, now=now)


def _step_ended(
    run: Run, new: Run, record: StepRecord, event: Event, *, kind: EventKind, message: str, now: float
) -> Decision:
    """A step done, or skipped at run time (a lost source under force): it moves on like a success
    but is recorded as a skip, so that status and history say what was not done."""
    done = kind is EventKind.SUCCEEDED
    verb = "done" if done else "skipped"
    record = record.model_copy(update={"finished_at": now, "message": message, "outcome": verb})
    new = _with_record(new, record)
    if not done:
        new = _apply(new, event.updates)
    step = run.current_step
    assert step is not None
    if run.state is Phase.COMPENSATING:
        return _next_undo(run, new, now, kind, f"undo {step.value} {verb}")
    new = new.model_copy(update={"state": fire(run.kind, run.state, kind)})
    return _settle(run, new, now, f"{step.value} {verb}: {message}" if message else f"{step.value} {verb}")


def _start(run: Run, now: float) -> Decision:
    if run.state is not Phase.PENDING:
        return _ignore(run, f"run already started (state {run.state_name}): start ignored")
    new = run.model_copy(
        update={
            "status": RunStatus.IN_PROGRESS,
            "started_at": now,
            "deadline_at": now + (run.deadline_at - run.created_at),
            "state": fire(run.kind, Phase.PENDING, EventKind.START),
        }
    )
    return _settle(run, new, now, "started")


def _redrive(run: Run, now: float) -> Decision:
    """The run's message is overdue (lost between commit and send, or its worker died): send it again,
    unless the deadlines have passed meanwhile: no step reports back then, so they are checked here."""
    assert run.dispatch is not None
    step = run.dispatch.step
    unprocessed = f"its message for {step.value} was not processed (sent again {run.dispatch.redriven} times)"
    cause = None
    deadline = run.step_deadline
    if now > run.deadline_at and run.state is not Phase.COMPENSATING:
        cause = f"run exceeded its transitoryState timeout: {unprocessed}"
    elif deadline is not None and now > deadline:
        cause = f"not done within the step deadline of {run.step_timeout:g}s: {unprocessed}"
    elif run.dispatch.redriven >= MAX_REDRIVES:
        cause = f"no worker processed it: {unprocessed}"
    if cause is not None:
        failed = run.steps.get(run.step_key, StepRecord())
        failed = failed.model_copy(
            update={
                "started_at": failed.started_at or now,
                "finished_at": now,
                "outcome": "failed",
                "message": cause,
            }
        )
        event = Event(kind=EventKind.PERMANENT_FAILURE, step=step, ticket=run.dispatch.ticket)
        return _fail(run, _with_record(run, failed), event, step=step, message=cause, now=now)
    dispatch = run.dispatch.model_copy(update={"redriven": run.dispatch.redriven + 1, "due_at": now})
    reason = f"message for {step.value} ticket {run.dispatch.ticket} overdue: sent again"
    return Decision(
        run=run.model_copy(update={"dispatch": dispatch}), changed=True, dispatch=dispatch, reason=reason
    )


def _overdue(run: Run, event: Event, now: float) -> tuple[EventKind, str]:
    """The event, turned into a permanent failure if the run outlived timeouts.transitoryState.

    Compensation is exempt (it must be allowed to finish), and so is a completion that already
    happened: failing it now would undo a failover that has taken effect.
    """
    if now < run.deadline_at or run.state is Phase.COMPENSATING:
        return event.kind, event.message
    if event.kind is EventKind.SUCCEEDED and event.step is Step.COMPLETE:
        return event.kind, event.message
    limit = run.deadline_at - (run.started_at or run.created_at)
    message = f"run exceeded its transitoryState timeout of {limit:g}s ({event.message or 'in flight'})"
    return EventKind.PERMANENT_FAILURE, message


def _fail(run: Run, new: Run, event: Event, *, step: Step, message: str, now: float) -> Decision:
    failure = Failure(
        step=step,
        cluster=event.cluster or run.current_cluster,
        obj=event.obj,
        cause=message,
        superseded=event.superseded,
    )
    if run.state is Phase.COMPENSATING:
        # An undo that fails does not stop the others: each restores something on its own.
        new = new.model_copy(update={"message": f"{new.message}; undo failed at {failure.describe()}"})
        return _next_undo(run, new, now, EventKind.PERMANENT_FAILURE, f"undo {step.value} failed: {message}")
    new = new.model_copy(update={"failure": failure, "message": f"failed at {failure.describe()}"})
    if new.diverged:
        # Said where everybody reads it (the Failover's status, history), not only in the undo list.
        diverged = (
            f"{new.message}; past the point of no return ({POINT_OF_NO_RETURN[run.kind]}): nothing is "
            f"undone and the group is diverged; settle it with `{resolve_command(run.group)}`"
        )
        new = new.model_copy(update={"message": diverged})
    new = new.model_copy(
        update={
            "compensation": compensation_for(new),
            "compensation_index": 0,
            "state": fire(run.kind, run.state, EventKind.PERMANENT_FAILURE),
        }
    )
    return _settle(run, new, now, f"{step.value} failed: {message}; compensating")


def _with_record(run: Run, record: StepRecord) -> Run:
    """``run`` with the current step's record replaced (runs and records are immutable)."""
    return run.model_copy(update={"steps": {**run.steps, run.step_key: record}})


def _apply(run: Run, updates: Updates | None) -> Run:
    if updates is None:
        return run
    changes = {
        name: value
        for name, value in (
            ("token", updates.token),
            ("lease_expires_at", updates.lease_expires_at),
            ("replicas", dict(updates.replicas) if updates.replicas is not None else None),
            ("requested_at", updates.requested_at),
        )
        if value is not None
    }
    return run.model_copy(update=changes) if changes else run


def _again(old: Run, new: Run, now: float, *, delay: float, kind: EventKind, reason: str) -> Decision:
    """The same step, checked again after ``delay``: a new message with a new ticket."""
    assert old.dispatch is not None
    tickets = new.tickets + 1
    dispatch = Dispatch(step=old.dispatch.step, ticket=tickets, countdown=delay, due_at=now + delay)
    new = new.model_copy(
        update={"state": fire(old.kind, old.state, kind), "tickets": tickets, "dispatch": dispatch}
    )
    return Decision(run=new, changed=True, reason=reason, dispatch=dispatch)


def _next_undo(old: Run, new: Run, now: float, kind: EventKind, reason: str) -> Decision:
    index = new.compensation_index + 1
    ended = kind if index < len(new.compensation) else EventKind.UNDO_FINISHED
    new = new.model_copy(
        update={"compensation_index": index, "state": fire(old.kind, Phase.COMPENSATING, ended)}
    )
    return _settle(old, new, now, reason)


def _skip_planned(new: Run, now: float) -> tuple[Run, list[str]]:
    """Move past the steps the plan marks as skipped (no objects of their kind), recording each."""
    skipped = []
    while (step := new.at_step) is not None:
        planned = new.planned(step)
        if planned is None or planned.skip_reason is None:
            break
        record = StepRecord(started_at=now, finished_at=now, outcome="skipped", message=planned.skip_reason)
        new = new.model_copy(
            update={
                "steps": {**new.steps, step.value: record},
                "state": fire(new.kind, step, EventKind.SKIPPED),
            }
        )
        skipped.append(step.value)
    return new, skipped


def _settle(old: Run, new: Run, now: float, reason: str) -> Decision:
    """Skip the steps the plan marks as skipped, then dispatch the next step or finish the run."""
    new, skipped = _skip_planned(new, now)
    if skipped:
        reason = f"{reason}; skipped {', '.join(skipped)} (no resources of their kind)"
    journal = []
    if old.stage is not None and old.stage != new.stage:
        sequence = new.journal_sequence + 1
        new = new.model_copy(update={"journal_sequence": sequence})
        journal.append(JournalMark(stage=old.stage, state=new.state, sequence=sequence))
    if new.terminal:
        return Decision(run=_finished(new, now), changed=True, reason=_ended(new, reason), journal=journal)
    step = new.current_step
    assert step is not None, f"non-terminal state {new.state_name} without a step"
    tickets = new.tickets + 1
    delay = _first_check(old, step, new.timing)
    dispatch = Dispatch(step=step, ticket=tickets, countdown=delay, due_at=now + delay)
    new = new.model_copy(update={"tickets": tickets, "dispatch": dispatch})
    return Decision(
        run=new, changed=True, reason=f"{reason}; next {step.value}", dispatch=dispatch, journal=journal
    )


def _first_check(old: Run, step: Step, timing: Timing) -> float:
    """A wait on objects that follows the step which asked for their change is first checked after
    ``Timing.first_check_delay`` (no object changes within a round trip); any other step at once."""
    info, previous = CATALOGUE.get(step), old.current_step
    if info is None or info.type is not StepType.WAIT or info.role is None or previous in (None, step):
        return 0.0
    before = CATALOGUE.get(previous) if previous is not None else None
    return timing.first_check_delay() if before is not None and before.type is StepType.EFFECT else 0.0


def _finished(run: Run, now: float) -> Run:
    update: dict[str, object] = {"finished_at": now, "dispatch": None}
    if run.state is Phase.SUCCEEDED:
        update["status"] = RunStatus.SUCCESS
        if run.kind is PlanKind.STANDDOWN:
            update["message"] = f"{run.source_cluster} stood down; {run.target_cluster} stays active"
        else:
            update["message"] = f"moved to {run.target_cluster}"
    elif run.failure is not None and run.failure.cancelled:
        update["status"] = RunStatus.CANCELLED
    else:
        update["status"] = RunStatus.FAILED
    return run.model_copy(update=update)


def _ended(run: Run, reason: str) -> str:
    if run.state is Phase.SUCCEEDED:
        return f"{reason}; run succeeded"
    return f"{reason}; run cancelled" if run.failure and run.failure.cancelled else f"{reason}; run failed"


def settle(old: Run, new: Run, now: float, reason: str) -> Decision:
    """What :mod:`fsm.control` uses to move a run on after a control (skip, cancel): see ``_settle``."""
    return _settle(old, new, now, reason)


_SUPERSEDED = {
    Superseded.LEASE_LOST: "the lease was lost: another run may own the group; nothing undone",
    Superseded.FENCED: "fenced by a cluster: a newer run owns the group; nothing undone",
}


def compensation_for(run: Run) -> list[CompensationAction]:
    """The undo actions for a run that just failed (``run.failure`` set), newest effect first, then
    ABORT. Pure.

    Every effect step that was attempted (the failed one included: it may have half-applied) is
    undone on the cluster it acted on, unless the run had reached its kind's point of no return, past
    which an automatic undo could make two writers (or leave none serving); then only ABORT runs, and
    ABORT records the group as diverged for an operator to settle. A superseded run (lease lost,
    fenced) undoes nothing either: another run may own the group by now, and an undo would fight it.
    """
    superseded = run.failure.superseded if run.failure else None
    if superseded is not None:
        return [CompensationAction(step=Step.ABORT, cluster=None, because=_SUPERSEDED[superseded])]
    no_return = POINT_OF_NO_RETURN[run.kind]
    if no_return is None:
        because = f"a {run.kind.value} run is never undone: it only makes the group safer"
        return [CompensationAction(step=Step.ABORT, cluster=None, because=because)]
    if run.past_point_of_no_return:
        because = (
            f"past {no_return.value}: no automatic undo (it could leave two writers or none serving); "
            "the group is diverged: operator action needed"
        )
        return [CompensationAction(step=Step.ABORT, cluster=None, because=because)]
    attempted = [p for p in run.plan if (rec := run.steps.get(p.step.value)) and rec.attempts > 0]
    actions = [
        CompensationAction(
            step=undo_step, cluster=run.cluster_for(planned.side), because=f"undo {planned.step.value}"
        )
        for planned in reversed(attempted)
        if CATALOGUE[planned.step].type is StepType.EFFECT
        for undo_step in CATALOGUE[planned.step].undo
    ]
    actions.append(
        CompensationAction(step=Step.ABORT, cluster=None, because="record the failure, release the lock")
    )
    return actions
