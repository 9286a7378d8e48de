"""The step implementations: effects and waits run from the catalogue; coordination steps are functions.

Each step does one idempotent piece of work on one cluster (or on the coordination store) and returns
:class:`Done` or :class:`Wait`; it raises :class:`workers.errors.TemporaryError` or
:class:`workers.errors.PermanentError` when it cannot. It never sleeps, never re-reads the run and
never decides what comes next: the engine and ``fsm.decide`` do.

Steps are data: every effect step is :func:`effect` and every wait step :func:`wait`, run from the
step's entry in ``fsm.plan.CATALOGUE`` (which objects, which role). Adding one is a catalogue entry
and a line in a sequence. Only coordination steps (DynamoDB) are functions here, under ``@step``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fsm.decide import Updates
from fsm.models import ResourceRef
from fsm.plan import CATALOGUE, Step, StepInfo, StepType
from fsm.run import Run, Superseded
from fsm.status import iso as iso_time
from fsm.timeline import timeline_of
from workers.errors import (
    ClusterUnreachable,
    CoordinationConflict,
    LeaseLost,
    LockHeld,
    NotFoundError,
    PermanentError,
)
from workers.lease import LeaseGuard
from workers.ports import (
    Change,
    ClusterEffects,
    Coordination,
    Divergence,
    HistoryRecord,
    Role,
    check_all,
    make_all,
    observe_all,
)


@dataclass(frozen=True)
class Done:
    message: str = ""
    updates: Updates | None = None


@dataclass(frozen=True)
class Wait:
    message: str


Outcome = Done | Wait


@dataclass
class StepContext:
    """What a step may use: the run (read-only), its cluster, the two ports and the time."""

    run: Run
    cluster: str | None
    effects: ClusterEffects
    coordination: Coordination
    now: float
    lease_seconds: float
    holder: str
    clusters: tuple[str, ...] = ()
    lease: LeaseGuard | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        if self.run.token is None:
            raise PermanentError("no fencing token: the lock was never acquired by this run")
        return self.run.token

    def guard(self) -> None:
        """Before a write: the lease must still hold with a margin (renewed when half has passed)."""
        if self.lease is not None:
            self.lease.check()

    def pinned(self, refs: Sequence[ResourceRef]) -> None:
        """Before touching ``refs``: they are the run's objects, and the run's objects are those of the
        FailoverGroup it was created from (the digest pinned at creation; both under the run's MAC)."""
        run = self.run
        if run.pin is None or run.resources.digest() != run.pin.digest:
            raise PermanentError(f"run {run.run_id}: its resources are not the ones pinned at creation")
        stray = [str(ref) for ref in refs if ref not in run.resources.refs()]
        if stray:
            raise PermanentError(f"run {run.run_id}: {', '.join(stray)} not in its group's resources")

    def on_cluster(self) -> str:
        if self.cluster is None:
            raise PermanentError("this step needs a cluster and the plan gave it none")
        return self.cluster

    # Helpers shared by the effect and wait steps.

    def make(self, refs: Sequence[ResourceRef], role: Role) -> Done:
        cluster, epoch = self.on_cluster(), self.epoch
        self.pinned(refs)
        # The lease guard runs right before every write the adapter makes (retries included).
        made = make_all(
            self.effects,
            cluster,
            refs,
            role,
            epoch=epoch,
            group=self.run.group.name,
            replicas={ref.name: n for ref in refs if (n := self.run.replicas.get(ref.name)) is not None},
            requested_at={ref: self.requested_at(ref) for ref in refs},
            before_write=self.guard,
        )
        self.changes.extend(made)
        changed = [c for c in self.changes if c.changed]
        summary = f"{len(changed)} of {len(refs)} made {role.value} on {cluster}"
        if changed:
            summary += " (" + "; ".join(f"{c.ref}: {c.detail}" for c in changed) + ")"
        return Done(summary[:1000])

    def requested_at(self, ref: ResourceRef) -> str | None:
        """The reconcile stamp, for the Flux objects whose group asks for ``triggerReconcile`` only,
        once the run has one (the effect that resumes them records it)."""
        return self.run.requested_at if self.run.resources.reconciled(ref) else None

    def pending(self, refs: Sequence[ResourceRef], role: Role) -> list[tuple[ResourceRef, str]]:
        """The objects that have not reached ``role`` yet, each with the reason why not (each object
        read once, in as few requests as the adapter can)."""
        stamps = {ref: self.requested_at(ref) for ref in refs}
        checks = check_all(self.effects, self.on_cluster(), refs, role, stamps)
        return [(ref, checks[ref].detail) for ref in refs if not checks[ref].reached]

    def wait_for(self, refs: Sequence[ResourceRef], role: Role) -> Outcome:
        return self.judge(refs, role, self.pending(refs, role))

    def judge(
        self, refs: Sequence[ResourceRef], role: Role, pending: list[tuple[ResourceRef, str]]
    ) -> Outcome:
        cluster = self.on_cluster()
        if pending:
            shown = "; ".join(f"{ref}: {detail}" for ref, detail in pending[:3])
            return Wait(f"{len(pending)} of {len(refs)} not {role.value} on {cluster} ({shown})")
        return Done(f"all {len(refs)} {role.value} on {cluster}")


StepFn = Callable[[StepContext], Outcome]
STEPS: dict[Step, StepFn] = {}


def step(name: Step) -> Callable[[StepFn], StepFn]:
    def register(fn: StepFn) -> StepFn:
        STEPS[name] = fn
        return fn

    return register


def _role(info: StepInfo) -> Role:
    if info.role is None:
        raise PermanentError(f"step {info.step.value} has no role in the catalogue")
    return info.role


def effect(ctx: StepContext, info: StepInfo) -> Outcome:
    """Move the step's objects to its role on its cluster (idempotent: what is there stays).

    Making Flux objects active with ``triggerReconcile`` also requests a reconcile; the stamp is
    derived from the run (:attr:`fsm.run.Run.reconcile_stamp`), so two copies of this message write
    the same value and the wait for it can always succeed. The run records it.
    """
    role, refs = _role(info), ctx.run.resources.select(info.objects)
    stamp = None
    if role is Role.ACTIVE and any(ctx.run.resources.reconciled(ref) for ref in refs):
        stamp = ctx.run.reconcile_stamp
        ctx.run = ctx.run.model_copy(update={"requested_at": stamp})
    done = ctx.make(refs, role)
    return Done(done.message, Updates(requested_at=stamp)) if stamp else done


# A suspended CronJob's running Jobs are waited for this share of the time left to the step's
# deadline, then deleted: never left running silently, never allowed to fail the run by outliving it.
JOB_GRACE_SHARE = 0.5


def wait(ctx: StepContext, info: StepInfo) -> Outcome:
    """Check whether the step's objects have reached its role; past half the step's deadline, a wait
    for passive objects deletes the running Jobs of the suspended CronJobs still pending."""
    role, refs = _role(info), ctx.run.resources.select(info.objects)
    pending = ctx.pending(refs, role)
    outcome = ctx.judge(refs, role, pending)
    started = ctx.run.steps[ctx.run.step_key].started_at if ctx.run.step_key in ctx.run.steps else None
    deadline = ctx.run.step_deadline
    if role is not Role.PASSIVE or not pending or started is None or deadline is None:
        return outcome
    if ctx.now < started + (deadline - started) * JOB_GRACE_SHARE:
        return outcome
    cluster = ctx.on_cluster()
    stopped = []
    for ref, _detail in pending:
        if ref.kind == "CronJob":
            ctx.pinned([ref])
            ctx.guard()
            if (change := ctx.effects.stop_jobs(cluster, ref)).changed:
                stopped.append(change)
    ctx.changes.extend(stopped)
    if stopped and isinstance(outcome, Wait):
        detail = "; ".join(f"{c.ref}: {c.detail}" for c in stopped)
        return Wait(f"{outcome.message}; past the grace period, stopped running Jobs ({detail})")
    return outcome


def _from_catalogue(info: StepInfo) -> StepFn:
    run_it = effect if info.type is StepType.EFFECT else wait

    def run(ctx: StepContext) -> Outcome:
        return run_it(ctx, info)

    run.__name__ = info.step.value
    run.__doc__ = info.description
    return run


# --- initialization ------------------------------------------------------------------------------


@step(Step.VALIDATE)
def validate(ctx: StepContext) -> Outcome:
    """Check that every referenced object exists on both clusters; note the replica counts. (Where
    the group is active is checked once, under its lock: :func:`acquire_lock`.)"""
    run = ctx.run
    replicas: dict[str, int] = {}
    refs = run.resources.refs()
    ctx.pinned(refs)
    notes = []
    for cluster in (run.target_cluster, run.source_cluster):
        try:
            seen = observe_all(ctx.effects, cluster, refs)  # in parallel where the adapter can
        except ClusterUnreachable:
            if cluster != run.source_cluster or not run.force:
                raise
            # Under force the source may be gone: its steps decide later, on its heartbeat.
            notes.append(f"source {cluster} unreachable: not checked")
            continue
        for ref, observation in seen.items():
            if not observation.exists:
                raise PermanentError(f"{ref} does not exist", cluster=cluster, obj=str(ref))
            if observation.replicas is not None:
                # The source's count wins; the target's remembered count is the fallback.
                replicas[ref.name] = observation.replicas
    checked = (
        f"{len(refs)} objects found on both clusters"
        if not notes
        else f"{len(refs)} objects found on {run.target_cluster}; {'; '.join(notes)}"
    )
    return Done(checked, Updates(replicas=replicas))


@step(Step.ACQUIRE_LOCK)
def acquire_lock(ctx: StepContext) -> Outcome:
    run = ctx.run
    try:
        grant = ctx.coordination.acquire_lock(
            run.group,
            holder=ctx.holder,
            run_id=run.lock_owner,
            lease_seconds=ctx.lease_seconds,
            now=ctx.now,
            digest=run.pin.digest if run.pin else None,
        )
    except LockHeld:
        # A redelivered message after a crash between acquiring and committing: the lock is ours.
        # ``lock_owner`` carries this copy's nonce: the same run id created at another site (each
        # site's Redis deduplicates only its own submissions) does not pass for us.
        info = ctx.coordination.lock_info(run.group)
        if info is None or info.run_id != run.lock_owner:
            raise
        _check_owner(ctx, info.token)
        return Done(
            f"lock already held by this run (token {info.token})",
            Updates(token=info.token, lease_expires_at=info.expires_at),
        )
    _check_owner(ctx, grant.token)
    return Done(
        f"lock acquired with fencing token {grant.token}",
        Updates(token=grant.token, lease_expires_at=grant.expires_at),
    )


def _check_owner(ctx: StepContext, token: int) -> None:
    """Under the lock, the one read that counts: the group is still active where the run expects it
    (a failover's source, a stand-down's owner). If not, the lock goes back and the run fails having
    changed nothing. The producer's earlier read only chose the source."""
    run, expected = ctx.run, ctx.run.expected_owner
    if expected is None:
        return
    active = ctx.coordination.active_cluster(run.group)
    if active == expected:
        return
    ctx.coordination.release_lock(run.group, token=token)
    if active == run.target_cluster and expected == run.source_cluster:
        raise PermanentError(f"{run.target_cluster!r} is already the active cluster of group {run.group}")
    raise PermanentError(
        f"group {run.group} is active on {active!r}, not on {expected!r} as when the run was created; "
        "nothing was changed"
    )


@step(Step.RAISE_FENCE)
def raise_fence(ctx: StepContext) -> Outcome:
    """Raise the group's fence to this run's token on every cluster that answers, before the run
    changes anything anywhere: from then on each cluster refuses writes of any older run.

    The target must answer (it is retried like any step); the source too unless the run is forced (a
    lost site is fenced when it answers again: see README "Fencing"). Other known clusters that do not
    answer, or do not hold the FailoverGroup, are noted: they cannot be fenced now.
    """
    run, token = ctx.run, ctx.epoch
    clusters = dict.fromkeys([run.target_cluster, run.source_cluster, *ctx.clusters])
    raised, noted = [], []
    for cluster in clusters:
        ctx.guard()
        try:
            change = ctx.effects.raise_fence(cluster, run.group, token=token)
        except ClusterUnreachable as error:
            if cluster == run.target_cluster or (cluster == run.source_cluster and not run.force):
                raise
            noted.append(f"{cluster} not reached ({error.message})")
            continue
        except NotFoundError:
            noted.append(f"{cluster} holds no FailoverGroup {run.group.namespace}/{run.group.name}")
            continue
        ctx.changes.append(change)
        raised.append(cluster)
    message = f"fence {token} on {', '.join(raised)}"
    return Done(f"{message}; {'; '.join(noted)}" if noted else message)


# --- coordination ----------------------------------------------------------------------------------


@step(Step.MARK_VOLUMES_RELEASED)
def mark_volumes_released(ctx: StepContext) -> Outcome:
    ctx.coordination.mark_volumes_released(ctx.run.group, token=ctx.epoch, cluster=ctx.run.source_cluster)
    return Done(f"volumes released by {ctx.run.source_cluster}")


@step(Step.WAIT_VOLUMES_RELEASED)
def wait_volumes_released(ctx: StepContext) -> Outcome:
    released_by = ctx.coordination.volumes_released(ctx.run.group, token=ctx.epoch)
    if released_by is None:
        return Wait(f"no release record from {ctx.run.source_cluster} yet")
    if released_by != ctx.run.source_cluster:
        raise PermanentError(f"volumes released by {released_by!r}, expected {ctx.run.source_cluster!r}")
    return Done(f"release record from {released_by} found")


def history_record(run: Run, *, outcome: str, now: float) -> HistoryRecord:
    failure = run.failure
    return HistoryRecord(
        run_id=run.run_id,
        failover=run.failover,
        group=str(run.group),
        mode=run.kind.value,
        source_cluster=run.source_cluster,
        target_cluster=run.target_cluster,
        force=run.force,
        reason=run.reason,
        started_at=run.started_at or run.created_at,
        finished_at=now,
        outcome=outcome,
        downtime_seconds=run.downtime_seconds(),
        failed_step=failure.step.value if failure else None,
        message=failure.describe() if failure else "",
        skipped=tuple(run.skipped()),
        drill=run.drill,
        timeline=timeline_of(run),
        controls=tuple(f"{iso_time(c.at)} #{c.id} {c.describe()}" for c in run.controls),
    )


@step(Step.COMPLETE)
def complete(ctx: StepContext) -> Outcome:
    run = ctx.run
    record = history_record(run, outcome="SUCCESS", now=ctx.now)
    try:
        ctx.coordination.complete_failover(
            run.group,
            token=ctx.epoch,
            expected_owner=run.source_cluster,
            new_owner=run.target_cluster,
            record=record,
            digest=run.pin.digest if run.pin else None,
            holder=ctx.holder,
        )
    except (LeaseLost, CoordinationConflict):
        # A redelivery after the transaction committed finds the lock gone and the owner flipped.
        if ctx.coordination.active_cluster(run.group) == run.target_cluster and any(
            h.run_id == run.run_id for h in ctx.coordination.history(run.group, limit=10)
        ):
            return Done(f"already completed: {run.target_cluster} is active")
        raise
    return Done(f"{run.target_cluster} is now the active cluster; lock released")


@step(Step.RECORD_STANDDOWN)
def record_standdown(ctx: StepContext) -> Outcome:
    """The record of what a stand-down changed on the returning site, then the lock goes back."""
    run = ctx.run
    effects = {p.step.value for p in run.plan if CATALOGUE[p.step].type is StepType.EFFECT}
    changes = [
        f"{key}: {rec.message}" for key, rec in run.steps.items() if key in effects and rec.outcome == "done"
    ]
    record = dataclasses.replace(
        history_record(run, outcome="STOOD_DOWN", now=ctx.now),
        message=f"{run.source_cluster} made passive ({run.reason}): " + " | ".join(changes),
    )
    ctx.coordination.record_history(run.group, record)
    ctx.coordination.release_lock(run.group, token=ctx.epoch)
    return Done(f"stand-down of {run.source_cluster} recorded in history; lock released")


@step(Step.RECORD_RESOLUTION)
def record_resolution(ctx: StepContext) -> Outcome:
    """The chosen cluster becomes the recorded owner, the divergence is cleared, and the lock is
    released, in one transaction conditioned on the token."""
    run = ctx.run
    record = dataclasses.replace(
        history_record(run, outcome="RESOLVED", now=ctx.now),
        message=f"{run.target_cluster} settled as the active cluster, {run.source_cluster} passive "
        f"({run.reason})",
    )
    try:
        ctx.coordination.settle_owner(run.group, token=ctx.epoch, owner=run.target_cluster, record=record)
    except LeaseLost:
        # A redelivery after the transaction committed finds the lock gone and the owner set.
        if ctx.coordination.active_cluster(run.group) == run.target_cluster and any(
            h.run_id == run.run_id for h in ctx.coordination.history(run.group, limit=10)
        ):
            return Done(f"already settled: {run.target_cluster} is active")
        raise
    return Done(f"{run.target_cluster} recorded as the active cluster; divergence cleared; lock released")


def _changed_where(run: Run) -> str:
    """What a run changed on which cluster before it stopped: what an operator settles from."""
    done: dict[str, list[str]] = {}
    for planned in run.plan:
        record = run.steps.get(planned.step.value)
        cluster = run.cluster_for(planned.side)
        effect = CATALOGUE[planned.step].type is StepType.EFFECT
        if cluster and effect and record is not None and record.outcome == "done":
            done.setdefault(cluster, []).append(planned.step.value)
    changed = "; ".join(f"{cluster}: {', '.join(steps)}" for cluster, steps in done.items())
    return f"{run.kind.value} {run.source_cluster} -> {run.target_cluster}; done: {changed or 'nothing'}"


def _outcome_of(run: Run) -> str:
    """History's outcome for a failed run: FENCED when a cluster refused it, CANCELLED when an operator
    cancelled it, else FAILED."""
    if run.failure and run.failure.cancelled:
        return "CANCELLED"
    return "FENCED" if run.failure and run.failure.superseded is Superseded.FENCED else "FAILED"


@step(Step.ABORT)
def abort(ctx: StepContext) -> Outcome:
    """Record the failure (and, past the point of no return, that the group is diverged), then release
    the lock if it is still ours."""
    run = ctx.run
    if run.diverged and run.failure is not None:
        divergence = Divergence(
            reason=f"run {run.run_id} failed past its point of no return: {run.failure.describe()}",
            at=ctx.now,
            run_id=run.run_id,
            step=run.failure.step.value,
            detail=_changed_where(run),
        )
        ctx.coordination.mark_diverged(run.group, divergence)
    ctx.coordination.record_history(run.group, history_record(run, outcome=_outcome_of(run), now=ctx.now))
    if run.token is None:
        return Done("failure recorded; no lock was held")
    released = ctx.coordination.release_lock(run.group, token=run.token)
    return Done(
        "failure recorded; lock released" if released else "failure recorded; the lock was no longer ours"
    )


# Every effect and every wait with a role runs from its catalogue entry.
STEPS.update(
    {
        info.step: _from_catalogue(info)
        for info in CATALOGUE.values()
        if info.type is not StepType.COORDINATION and info.role is not None
    }
)
