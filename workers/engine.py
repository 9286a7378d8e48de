"""The engine: runs one step of one run, asks ``fsm.decide`` what the outcome means, commits it by
compare-and-set and sends the next message.

What it must not do: sleep, wait for another task, or act on a message the run no longer expects.
Every message names a run and a ticket; a duplicate, a late redelivery or a message for a step the
run has moved past finds another ticket in the run and does nothing. The order of effects is fixed:
step effect -> journal (stage boundaries) -> compare-and-set and send in one Redis script (the
transactional outbox, :mod:`workers.outbox`) -> observers. A crash anywhere leaves either the old
state (the broker redelivers the message; the step is idempotent) or the new state with its message
queued. Without the outbox (a broker other than the run store's Redis) the message is sent after the
commit, and a crash between the two leaves it unsent, which :meth:`Engine.redrive` re-sends once it is
overdue.

Recovery (README "Reliability"): a worker records the step it starts as claimed (run, ticket, resend
count, worker id); :meth:`Engine.redrive` re-sends the message of a due run that no live worker
claimed, by the rules of :mod:`workers.recovery` (heartbeat, start-to-close, schedule-to-start
timeouts), and :meth:`Engine.recover` rebuilds from the DynamoDB journal the runs whose lock this
site holds but whose state Redis lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from fsm.control import apply_controls, decide_at_boundary
from fsm.decide import Decision, Event, EventKind, Updates, decide
from fsm.models import GroupKey
from fsm.plan import Step, state_name
from fsm.run import Run
from workers.admission import admission_for
from workers.container import Adapters
from workers.control_requests import controls_decided
from workers.errors import (
    OrchestratorError,
)
from workers.lease import LeaseGuard
from workers.messages import START_TASK, Outgoing, Sender, queue_for, task_name
from workers.outcomes import failed_event
from workers.ports import JournalEntry, LockIndex
from workers.recovery import Claim, Timeouts, WorkerInfo, claim_holds, resend_reason
from workers.settings import Settings
from workers.steps import STEPS, Done, StepContext
from workers.store import RunStore
from workers.submission import restore_run, submit_run
from workers.waits import WaitRegistry, note_outcome, taken_at

if TYPE_CHECKING:
    from workers.outbox import BrokerOutbox

log = structlog.get_logger(__name__)


_COMMIT_ATTEMPTS = 5
_SWEEP_CHUNK = 100  # due runs read at once by the sweep
_ENDS_LEASE = frozenset({Step.ABORT, Step.COMPLETE, Step.RECORD_STANDDOWN, Step.RECORD_RESOLUTION})
# Events that are not a step boundary: a redrive re-sends a step that may still be running.
_NOT_BOUNDARIES = frozenset({EventKind.REDRIVE, EventKind.START})


def _renewed(event: Event, lease: LeaseGuard | None) -> Event:
    """``event`` carrying the lease expiry its step renewed, so that the run knows when the next step
    must renew again (only once half the lease has gone)."""
    if lease is None or lease.expires_at is None:
        return event
    updates = event.updates or Updates()
    if updates.lease_expires_at is not None:
        return event
    return event.model_copy(
        update={"updates": updates.model_copy(update={"lease_expires_at": lease.expires_at})}
    )


class Engine:
    def __init__(
        self,
        store: RunStore,
        adapters: Adapters,
        sender: Sender,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        worker_id: str | None = None,
        waits: WaitRegistry | None = None,
        outbox: BrokerOutbox | None = None,
    ) -> None:
        """``worker_id``: the heartbeating worker this engine runs steps for; each step it starts is
        recorded as claimed by it (None: no claims, e.g. an engine that only sweeps). ``waits``: where
        a waiting step registers what it waits for, to be woken by a watch event (:mod:`workers.waits`;
        None: waits are only polled). ``outbox``: builds each step message for the commit that decides
        it to push (:mod:`workers.outbox`; None: ``sender`` sends it after the commit)."""
        self.worker_id = worker_id
        self.outbox = outbox
        self.waits = waits
        self.store = store
        self.adapters = adapters
        self.sender = sender
        self.settings = settings
        self.clock = clock
        self.jitter = jitter
        self.admission = admission_for(store, settings) if settings.admission else None

    # --- entry points (one per task) -------------------------------------------------------------

    def submit(self, run: Run) -> bool:
        """Store a new PENDING run and send its start message; False if the run id exists."""
        return submit_run(self.store, self.sender, run).created

    def start(self, run_id: str) -> Decision | None:
        run = self.store.load(run_id)
        if run is None:
            log.warning("run.unknown", run_id=run_id, task=START_TASK)
            return None
        return self.apply(run, Event(kind=EventKind.START))

    def run_step(self, step: Step, run_id: str, ticket: int) -> Decision | None:
        """Execute ``step`` for the run if it still expects it, then record what happened."""
        run = self.store.load(run_id)
        if run is None:
            log.warning("run.unknown", run_id=run_id, step=step.value)
            return None
        # Every line logged while this step runs names the run's Failover, group, step and cluster.
        with structlog.contextvars.bound_contextvars(
            failover=run.failover, group=str(run.group), step=step.value, cluster=run.current_cluster
        ):
            if run.expects(step, ticket) and run.pending_controls:
                # A step boundary (this delivery has not started): an operator's controls go first.
                self._apply_controls(run)
                run = self.store.load(run_id) or run
            started = self.clock()
            if run.expects(step, ticket) and self.worker_id is not None and run.dispatch is not None:
                claim = Claim(ticket=ticket, attempt=run.dispatch.redriven, worker=self.worker_id, at=started)
                # A control applied between the read and the claim wins (it is committed only while
                # the step is unclaimed): the claim reads the run again before acting.
                ttl = self.settings.start_to_close + self.settings.redrive_after
                run = self.store.claim(run_id, claim, ttl=ttl) or run
            if not run.expects(step, ticket):
                log.info(
                    "message.stale",
                    run_id=run_id,
                    ticket=ticket,
                    state=run.state_name,
                    paused=run.paused,
                    expected=run.dispatch.model_dump() if run.dispatch else None,
                )
                return None
            woken = taken_at(self.waits, run_id, step, ticket, started) is not None
            event = self._execute(run, step, ticket, started)
            decision = self.apply(run, event)
            note_outcome(self.waits, run, event, decision, woken=woken, margin=self.settings.redrive_after)
            return decision

    def control(self, run_id: str) -> Decision | None:
        """Apply the run's pending controls now if none of its steps is running (``failover.control``,
        sent by whoever asked); a running step's outcome applies them when it reports back."""
        run = self.store.load(run_id)
        if run is None or not run.pending_controls:
            return None
        return self._apply_controls(run)

    def redrive(self) -> list[str]:
        """Re-send the message of every due run that no live worker is working on (the rules are in
        :mod:`workers.recovery`). Reads only the runs due by now: O(overdue), never all runs, and
        those ``_SWEEP_CHUNK`` at a time, so that a sweep's memory does not grow with a backlog."""
        now = self.clock()
        settings = self.settings
        if self.admission is not None and self.store.take_turn("prune", seconds=settings.recovery_interval):
            self.admission.prune()
        self._admit()
        due = self.store.due(before=now)
        if not due:
            return []
        workers = self.store.live_workers()
        timeouts = Timeouts(
            heartbeat_interval=settings.heartbeat_interval,
            schedule_to_start=settings.schedule_to_start,
            start_to_close=settings.start_to_close,
            redrive_after=settings.redrive_after,
        )
        sent = []
        for start in range(0, len(due), _SWEEP_CHUNK):
            chunk = dict(due[start : start + _SWEEP_CHUNK])
            runs, claims = self.store.load_many(chunk), self.store.claims(chunk)
            for run_id, due_at in chunk.items():
                run = runs.get(run_id)
                if run is None or run.terminal:
                    self.store.untrack(run_id)  # expired or finished: never let it crowd out live runs
                elif self._sweep_one(
                    run, due_at=due_at, claim=claims.get(run_id), workers=workers, now=now, timeouts=timeouts
                ):
                    sent.append(run_id)
        return sent

    def _sweep_one(
        self,
        run: Run,
        *,
        due_at: float,
        claim: Claim | None,
        workers: dict[str, WorkerInfo],
        now: float,
        timeouts: Timeouts,
    ) -> bool:
        """One due run of the sweep: its controls, its pause, or its message sent again (True)."""
        if run.pending_controls and not claim_holds(run, claim):
            self._apply_controls(run)  # its control message was lost, or it is paused
            return False
        if run.paused:
            self._hold(run, now)
            return False
        queue = queue_for(self.settings, run.current_cluster)
        why = resend_reason(
            run, due_at=due_at, queue=queue, claim=claim, workers=workers, now=now, timeouts=timeouts
        )
        if why is None:
            return False
        if run.dispatch is None:
            event = Event(kind=EventKind.START)
        else:
            event = Event(kind=EventKind.REDRIVE, step=run.dispatch.step, ticket=run.dispatch.ticket)
        # One attempt: if another sweeper or the step itself committed first, the next sweep looks again.
        decision = self.apply(run, event, retry=False)
        if decision is None or not decision.changed:
            return False
        log.warning("run.redriven", run_id=run.run_id, why=why, reason=decision.reason)
        return True

    def recover(self) -> list[str]:
        """Rebuild from the journal every run whose group's lock this site holds (``settings.holder``)
        but whose state Redis lost; drop index entries whose lock is gone. O(locks held)."""
        index = self.adapters.coordination
        if not isinstance(index, LockIndex):
            return []
        holder = self.settings.holder
        rebuilt = []
        for held in index.held_locks(holder):
            candidates = held.run_ids()
            present = self.store.load_many(candidates)
            if any(not run.terminal for run in present.values()):
                continue  # the common case: one Redis read per held lock
            lock = self.adapters.coordination.lock_info(held.group)
            if lock is None or lock.run_id != held.lock_owner:
                index.forget_held_lock(holder, held.group, held.lock_owner)
                continue
            if present:
                continue  # finished in Redis, lock not yet released: its lease runs out
            for run_id in candidates:
                run = self.rebuild(held.group, run_id)
                if run is not None and run.lock_owner == held.lock_owner:
                    rebuilt.append(run_id)
                    break
            else:
                log.error(
                    "run.unrecoverable",
                    group=str(held.group),
                    lock_owner=held.lock_owner,
                    reason="the lock is held but Redis lost the run and its journal has no entry yet; "
                    "the lock is released when its lease runs out",
                )
        return rebuilt

    def rebuild(self, group: GroupKey, run_id: str) -> Run | None:
        """Recreate a run that Redis lost from its newest journal entry and send its message again.

        The journal holds the whole run as it stood when it entered its latest stage; every step is
        idempotent, so resuming from there repeats at most that stage's work. Returns the rebuilt
        run, or None if the journal has no entry or Redis still has the run.
        """
        restored = restore_run(self.store, self.adapters.coordination, group, run_id)
        if restored is None or not restored.created:
            return None
        stored = restored.run
        if stored.terminal:
            return stored
        if stored.dispatch is None:
            self.apply(stored, Event(kind=EventKind.START))
        else:
            event = Event(kind=EventKind.REDRIVE, step=stored.dispatch.step, ticket=stored.dispatch.ticket)
            self.apply(stored, event)
        return self.store.load(run_id)

    # --- operator controls (fsm.control) ----------------------------------------------------------

    def _apply_controls(self, run: Run) -> Decision | None:
        """Apply the pending controls at this step boundary, under the lease, committed only while the
        step the run waits for is not claimed by a worker (never mid-step)."""
        claims = self.store.claims([run.run_id])
        for _ in range(_COMMIT_ATTEMPTS):
            if claim_holds(run, claims.get(run.run_id)):
                log.info("control.deferred", run_id=run.run_id, step=run.step_key, reason="step running")
                return None
            self._confirm_lease(run)
            decision = apply_controls(Decision(run=run, changed=False, reason=""), self.clock())
            self._journal(decision)
            dispatch = run.dispatch
            claimed = (
                Claim(ticket=dispatch.ticket, attempt=dispatch.redriven, worker="", at=0.0)
                if dispatch
                else None
            )
            outgoing = self._outgoing(decision)
            committed = self.store.commit_unclaimed(
                decision.run, expected_version=run.version, claimed=claimed, outgoing=outgoing
            )
            if committed is not None:
                self._after_commit(committed, decision, before=run, outgoing=outgoing)
                return decision
            reloaded = self.store.load(run.run_id)
            if reloaded is None or not reloaded.pending_controls:
                return None
            run, claims = reloaded, self.store.claims([run.run_id])
        return None

    def _confirm_lease(self, run: Run) -> None:
        """Renew the run's lease before a control changes it (logged, not fatal: a control changes no
        cluster, and the next step's own guard refuses to write without the lease)."""
        if run.token is None:
            return
        try:
            self._renew(run, run.token)
        except OrchestratorError as error:
            log.warning("control.lease_not_confirmed", run_id=run.run_id, error=error.describe())

    def _hold(self, run: Run, now: float) -> None:
        """A paused run: renew its lease so that nobody takes the group, and look again in a third of
        the lease. Never re-sent, never timed out while paused (its deadlines move on resume)."""
        if run.token is not None:
            try:
                self.adapters.coordination.renew_lease(
                    run.group, token=run.token, lease_seconds=self.settings.lease_seconds, now=now
                )
            except OrchestratorError as error:
                log.error("run.paused_lease_not_renewed", run_id=run.run_id, error=error.describe())
        self.store.defer(run.run_id, due_at=now + self.settings.lease_seconds / 3)

    # --- internals -------------------------------------------------------------------------------

    def _renew(self, run: Run, token: int) -> LeaseGuard:
        """Renew the run's lease now (no expiry known to wait for); the guard that says until when
        writes are safe."""
        return LeaseGuard.renewed_if_half_gone(
            self.adapters.coordination,
            run.group,
            token=token,
            lease_seconds=self.settings.lease_seconds,
            margin=self.settings.lease_margin,
            wall=self.clock,
        )

    def _execute(self, run: Run, step: Step, ticket: int, started: float) -> Event:
        ctx = StepContext(
            run=run,
            cluster=run.current_cluster,
            effects=self.adapters.effects,
            coordination=self.adapters.coordination,
            now=started,
            lease_seconds=self.settings.lease_seconds,
            holder=self.settings.holder,
            clusters=tuple(self.settings.clusters),
        )
        base: dict[str, Any] = {"step": step, "ticket": ticket, "started_at": started}
        try:
            # The steps that end the lease themselves (conditioned on the token) are not renewed: a
            # redelivery after they committed must reach their own "already done" checks.
            if run.token is not None and step not in _ENDS_LEASE:
                ctx.lease = LeaseGuard.renewed_if_half_gone(
                    self.adapters.coordination,
                    run.group,
                    token=run.token,
                    lease_seconds=self.settings.lease_seconds,
                    margin=self.settings.lease_margin,
                    expires_at=run.lease_expires_at,
                    wall=self.clock,
                )
            outcome = STEPS[step](ctx)
        except Exception as error:
            failed = failed_event(
                run, error, started, base, jitter=self.jitter, coordination=self.adapters.coordination
            )
            return _renewed(failed, ctx.lease)
        if isinstance(outcome, Done):
            event = Event(kind=EventKind.SUCCEEDED, message=outcome.message, updates=outcome.updates, **base)
        else:
            event = Event(kind=EventKind.WAITING, message=outcome.message, **base)
        return _renewed(event, ctx.lease)

    def apply(self, run: Run, event: Event, *, retry: bool = True) -> Decision | None:
        """Decide, journal, commit (compare-and-set), send. Re-reads and re-decides on a conflict
        (``retry=False``: gives up instead, returning None)."""
        for _ in range(_COMMIT_ATTEMPTS if retry else 1):
            now = self.clock()
            boundary = event.kind not in _NOT_BOUNDARIES
            decision = decide_at_boundary(decide(run, event, now), now, outcome=boundary)
            if not decision.changed:
                log.info("event.ignored", run_id=run.run_id, kind=event.kind.value, reason=decision.reason)
                return decision
            self._journal(decision)
            outgoing = self._outgoing(decision)
            signed = self._signed_by_sender(decision.run, pushed=outgoing is not None)
            committed = self.store.commit(signed, expected_version=run.version, outgoing=outgoing)
            if committed is not None:
                self._after_commit(committed, decision, before=run, outgoing=outgoing)
                return decision
            reloaded = self.store.load(run.run_id)
            if reloaded is None:
                return None
            run = reloaded
        if not retry:
            return None
        log.error("run.commit_contended", run_id=run.run_id, kind=event.kind.value, attempts=_COMMIT_ATTEMPTS)
        return None

    def _outgoing(self, decision: Decision) -> Outgoing | None:
        """The message the decision sends, built for its commit to push (None: no outbox, or none)."""
        dispatch, run = decision.dispatch, decision.run
        if self.outbox is None or dispatch is None or run.paused:
            return None
        name, countdown = task_name(dispatch.step), dispatch.countdown
        return self.outbox.outgoing(
            name, run.run_id, dispatch.ticket, countdown=countdown, cluster=run.current_cluster
        )

    def _signed_by_sender(self, run: Run, *, pushed: bool) -> Run:
        """``run`` with its dispatch naming this engine's worker as the one that sends its message
        after the commit; unchanged when the commit pushes the message itself (``pushed``: nothing
        can come between the two, so nothing for the sweep to suspect)."""
        dispatch = run.dispatch
        if pushed or dispatch is None or self.worker_id is None or not self.settings.recovery_thread:
            return run  # only a heartbeating worker can be found dead by the sweep
        if dispatch.sender == self.worker_id:
            return run
        return run.model_copy(update={"dispatch": dispatch.model_copy(update={"sender": self.worker_id})})

    def _journal(self, decision: Decision) -> None:
        run = decision.run
        for mark in decision.journal:
            entry = JournalEntry(
                run_id=run.run_id,
                sequence=mark.sequence,
                stage=mark.stage.value,
                state=state_name(mark.state),
                at=self.clock(),
                run_json=run.model_dump_json(),
            )
            try:
                self.adapters.coordination.write_journal(run.group, entry)
            except OrchestratorError as error:
                # Best effort: the next boundary journals the whole run again, and every step is
                # idempotent, so a rebuild from an older entry repeats work rather than skipping it.
                log.warning(
                    "journal.write_failed", run_id=run.run_id, stage=mark.stage.value, error=error.describe()
                )

    def _after_commit(self, run: Run, decision: Decision, *, before: Run, outgoing: Outgoing | None) -> None:
        controls_decided(self.sender, before, run)
        log.info(
            "run.decided",
            run_id=run.run_id,
            state=run.state_name,
            status=run.status.value,
            version=run.version,
            reason=decision.reason,
        )
        if outgoing is not None and self.outbox is not None:
            self.outbox.sent(outgoing)  # the commit pushed it; Flower's task-sent event, if on
        elif decision.dispatch is not None and not run.paused:
            dispatch = decision.dispatch
            self.sender.send(
                task_name(dispatch.step),
                run.run_id,
                dispatch.ticket,
                countdown=dispatch.countdown,
                cluster=run.current_cluster,
            )
        for observer in self.adapters.observers:
            try:
                observer.observe(run, decision.reason)
            except Exception:
                log.exception("observer.failed", run_id=run.run_id, observer=type(observer).__name__)
        if run.terminal or (decision.dispatch is not None and decision.dispatch.countdown > 0):
            self._admit()  # the run freed ready work: admit the next ones now, not at the next sweep

    def _admit(self) -> None:
        """Admit the queued runs that fit now (logged, not fatal: the next sweep admits them)."""
        if self.admission is None:
            return
        try:
            self.admission.admit(self.sender)
        except OrchestratorError as error:
            log.warning("admission.failed", error=error.describe())
