"""Asking for an operator control of a run (:mod:`fsm.control`): checked now, stored by
compare-and-set on the signed run, then one ``failover.control`` message so that the engine applies it
at once when no step is running (else when the running step reports back). Producers reach this
through :meth:`workers.api.Orchestrator.control`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from fsm.audit import ControlAction, ControlOutcome, ControlRecord
from fsm.control import decided_between, refusal, refused, request
from fsm.plan import Step
from fsm.run import Run
from workers.errors import PermanentError, TemporaryError
from workers.messages import CONTROL_TASK, PAUSED_TASK, RESUMED_TASK, Sender
from workers.metrics import count_controls
from workers.store import RunStore

log = structlog.get_logger(__name__)

_ATTEMPTS = 8


@dataclass(frozen=True)
class ControlRequest:
    """What became of a request: ``record`` (the stored request) or ``refused`` (why, nothing stored
    unless the caller asked for refusals to be recorded)."""

    run: Run
    record: ControlRecord | None
    refused: str | None = None


@dataclass(frozen=True)
class Asked:
    action: ControlAction
    who: str
    why: str
    step: Step | None = None
    force: bool = False
    source: str = "cli"


def request_control(
    store: RunStore,
    sender: Sender,
    run_id: str,
    asked: Asked,
    *,
    record_refusal: bool = False,
    clock: Callable[[], float] = time.time,
) -> ControlRequest:
    """Check ``asked`` against the run and store it (compare-and-set, re-read on a conflict), then send
    the control message. Raises PermanentError for an unknown run."""
    options = {"step": asked.step, "force": asked.force, "source": asked.source}
    for _ in range(_ATTEMPTS):
        run = store.load(run_id)
        if run is None:
            raise PermanentError(f"no run {run_id!r} in the run store")
        now = clock()
        why_not = refusal(run, asked.action, now=now, step=asked.step, force=asked.force)
        if why_not is not None:
            if not record_refusal or run.terminal or run.dispatch is None:  # not started: ask again later
                return ControlRequest(run=run, record=None, refused=why_not)
            new = refused(
                run, action=asked.action, who=asked.who, why=asked.why, now=now, message=why_not, **options
            )
        else:
            new = request(
                run,
                action=asked.action,
                who=asked.who,
                why=asked.why,
                now=now,
                step=asked.step,
                force=asked.force,
                source=asked.source,
            )
        committed = store.commit(new, expected_version=run.version)
        if committed is None:
            continue
        if why_not is not None:
            count_controls([committed.controls[-1]])
            return ControlRequest(run=committed, record=committed.controls[-1], refused=why_not)
        sender.send(CONTROL_TASK, run_id, 0, countdown=0.0, cluster=None)
        return ControlRequest(run=committed, record=committed.controls[-1])
    raise TemporaryError(
        f"run {run_id} changed {_ATTEMPTS} times while the control was being stored: try again"
    )


def wait_decided(
    store: RunStore, run_id: str, record_id: int, *, timeout: float, interval: float = 0.2
) -> ControlRecord | None:
    """The control record once the engine applied or refused it; None if still pending at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        run = store.load(run_id)
        found = next((c for c in run.controls if c.id == record_id), None) if run else None
        if found is not None and not found.pending:
            return found
        if time.monotonic() >= deadline:
            return found
        time.sleep(interval)


def controls_decided(sender: Sender, before: Run, run: Run) -> None:
    """After the engine committed ``run`` (was ``before``): count the controls it decided, and name a
    pause (or its end) in Flower with a ``failover.paused`` task (shown PAUSED while the run is, see
    ``workers.tasks.paused``) or a ``failover.resumed`` one; their args are the run and the control id."""
    decided = decided_between(before, run)
    if not decided:
        return
    count_controls(decided)
    for record in decided:
        if record.outcome is not ControlOutcome.APPLIED:
            continue
        if record.action is ControlAction.PAUSE:
            name = PAUSED_TASK
        elif record.action is ControlAction.RESUME:
            name = RESUMED_TASK
        else:
            continue
        try:
            sender.send(name, run.run_id, record.id, countdown=0.0, cluster=None)
        except Exception:
            # Only a sign for Flower: the run is paused (or resumed) whether or not it is sent.
            log.warning("control.flower_sign_not_sent", run_id=run.run_id, task=name, exc_info=True)
