"""A run: one group moving under one Failover, as a versioned value object.

Pure, immutable data. A run is never changed in place: :func:`fsm.decide.decide` returns a new value,
and the run store commits it with a compare-and-set on ``version`` (Patroni's versioned
``Cluster``/``Leader``).
Everything a step needs to do its work is here, so a task takes nothing but the run id and a ticket.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fsm.audit import ControlRecord
from fsm.models import Failover, FailoverGroup, GroupKey, ResourceRef
from fsm.plan import (
    POINT_OF_NO_RETURN,
    Objects,
    Phase,
    PlanKind,
    PlannedStep,
    Side,
    Stage,
    State,
    Step,
    Timing,
    build_plan,
    is_terminal,
    state_name,
)


class RunStatus(StrEnum):
    """The Failover status values of docs/API.md, per run."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # an operator cancelled it before its point of no return; compensated


class StepRecord(BaseModel):
    """What happened to one step (or one compensation action): attempts, checks, times, outcome."""

    model_config = ConfigDict(frozen=True)

    attempts: int = 0
    checks: int = 0
    errors: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    outcome: str | None = None
    message: str = ""


class Dispatch(BaseModel):
    """The one message the run currently waits for. ``ticket`` guards against stale duplicates."""

    model_config = ConfigDict(frozen=True)

    step: Step
    ticket: int
    countdown: float = 0.0
    due_at: float = 0.0
    redriven: int = 0
    sender: str | None = None  # the worker that committed it and sends its message (workers.recovery)


def resolve_command(group: GroupKey) -> str:
    """The command that settles a diverged group, as every message about divergence quotes it."""
    return f"failoverctl group resolve {group.namespace}/{group.name} --active CLUSTER --reason TEXT"


class Superseded(StrEnum):
    """Why a run no longer owns its group: another run may, so nothing of it may be undone."""

    LEASE_LOST = "lease_lost"  # its lease could not be renewed or confirmed
    FENCED = "fenced"  # a cluster refused its write: a newer run raised the group's fence


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: Step
    cluster: str | None = None
    obj: str | None = None
    cause: str
    superseded: Superseded | None = None
    cancelled: bool = False  # an operator's cancel, compensated like a failure

    def describe(self) -> str:
        where = [f"step {self.step.value}"]
        if self.cluster:
            where.append(f"cluster {self.cluster!r}")
        if self.obj:
            where.append(self.obj)
        return f"{', '.join(where)}: {self.cause}"


class CompensationAction(BaseModel):
    """One undo, on a named cluster, run while the machine is COMPENSATING."""

    model_config = ConfigDict(frozen=True)

    step: Step
    cluster: str | None
    because: str


class Resources(BaseModel):
    """The group's objects, resolved to references once, at submission."""

    model_config = ConfigDict(frozen=True)

    workloads: list[ResourceRef] = Field(default_factory=list)
    volumes: list[ResourceRef] = Field(default_factory=list)
    network: list[ResourceRef] = Field(default_factory=list)
    flux: list[ResourceRef] = Field(default_factory=list)
    reconcile: list[str] = Field(default_factory=list)

    def select(self, objects: tuple[Objects, ...]) -> list[ResourceRef]:
        """The references of the given object sets, in the order given (a step's catalogue entry)."""
        chosen: dict[Objects, list[ResourceRef]] = {
            Objects.WORKLOADS: self.workloads,
            Objects.VOLUMES: self.volumes,
            Objects.NETWORK: self.network,
            Objects.FLUX: self.flux,
        }
        return [ref for o in objects for ref in chosen[o]]

    def reconciled(self, ref: ResourceRef) -> bool:
        """Whether ``ref`` is a Flux object whose group asks for ``triggerReconcile``."""
        return ref in self.flux and ref.name in self.reconcile

    def refs(self) -> list[ResourceRef]:
        """Every object the run may touch."""
        return [*self.workloads, *self.volumes, *self.network, *self.flux]

    def digest(self) -> str:
        """SHA-256 of these resources as canonical JSON: what a run pins at creation. Pure."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def of(cls, group: FailoverGroup) -> Resources:
        return cls(
            workloads=group.workload_refs(),
            volumes=group.volume_refs(),
            network=group.network_refs(),
            flux=group.flux_refs(),
            reconcile=[f.name for f in group.spec.flux_resources if f.trigger_reconcile],
        )


class GroupPin(BaseModel):
    """The FailoverGroup a run was created from, as the API server returned it: its uid and
    generation, and the digest of the resources the run acts on. Every effect re-checks the run's
    resources against ``digest``; completion in DynamoDB is conditioned on it (it is stored in the
    lock item when the run takes the lock)."""

    model_config = ConfigDict(frozen=True)

    uid: str | None = None
    generation: int | None = None
    digest: str

    @classmethod
    def of(cls, group: FailoverGroup, resources: Resources) -> GroupPin:
        return cls(uid=group.metadata.uid, generation=group.metadata.generation, digest=resources.digest())


class Run(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    nonce: str = ""
    version: int = 0
    failover: str
    failover_cluster: str | None = None
    group: GroupKey
    kind: PlanKind
    source_cluster: str
    target_cluster: str
    force: bool = False
    drill: bool = False  # a rehearsal: a real failover, marked as a drill in history and reports
    reason: str = ""
    resources: Resources
    pin: GroupPin | None = None
    plan: list[PlannedStep]
    timing: Timing = Field(default_factory=Timing)
    heartbeat_timeout: float = 60.0
    state: State = Phase.PENDING
    status: RunStatus = RunStatus.PENDING
    message: str = ""
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    deadline_at: float
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    dispatch: Dispatch | None = None
    tickets: int = 0
    token: int | None = None
    lease_expires_at: float | None = None
    replicas: dict[str, int] = Field(default_factory=dict)
    requested_at: str | None = None
    failure: Failure | None = None
    compensation: list[CompensationAction] = Field(default_factory=list)
    compensation_index: int = 0
    journal_sequence: int = 0
    controls: list[ControlRecord] = Field(default_factory=list)
    paused_at: float | None = None  # paused by an operator: nothing is sent until resumed

    # --- derived views (pure) ----------------------------------------------------------------

    @property
    def lock_owner(self) -> str:
        """Who the group's lock names: the run id, and this copy's nonce when it has one."""
        return f"{self.run_id}#{self.nonce}" if self.nonce else self.run_id

    @property
    def terminal(self) -> bool:
        return is_terminal(self.state)

    @property
    def state_name(self) -> str:
        """``status.state``: the step's label (``DEMOTING_VOLUMES``) or the phase (``COMPENSATING``);
        ``CANCELLED`` for a run an operator cancelled."""
        return RunStatus.CANCELLED.value if self.status is RunStatus.CANCELLED else state_name(self.state)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def pending_controls(self) -> list[ControlRecord]:
        return [c for c in self.controls if c.pending]

    @property
    def at_step(self) -> Step | None:
        """The plan step the machine is at (None before the start, in compensation and at the end)."""
        return self.state if isinstance(self.state, Step) else None

    @property
    def current_action(self) -> CompensationAction | None:
        """The undo action being run, while the run compensates."""
        if self.state is Phase.COMPENSATING and self.compensation_index < len(self.compensation):
            return self.compensation[self.compensation_index]
        return None

    @property
    def current_step(self) -> Step | None:
        """The step the run waits on: the plan's step, or the current compensation action's."""
        action = self.current_action
        return action.step if action is not None else self.at_step

    @property
    def step_key(self) -> str:
        """Key of the current step's record: compensation actions get their own records."""
        action = self.current_action
        if action is not None:
            return f"undo:{self.compensation_index}:{action.step.value}"
        step = self.at_step
        return step.value if step else self.state.value

    def planned(self, step: Step) -> PlannedStep | None:
        for planned in self.plan:
            if planned.step is step:
                return planned
        return None

    @property
    def stage(self) -> Stage | None:
        if self.state is Phase.COMPENSATING:
            return Stage.COMPENSATION
        step = self.at_step
        planned = self.planned(step) if step else None
        return planned.stage if planned else None

    def cluster_for(self, side: Side) -> str | None:
        return {Side.SOURCE: self.source_cluster, Side.TARGET: self.target_cluster}.get(side)

    @property
    def current_cluster(self) -> str | None:
        """The cluster the current step acts on (None for coordination steps)."""
        action = self.current_action
        if action is not None or self.state is Phase.COMPENSATING:
            return action.cluster if action is not None else None
        step = self.at_step
        planned = self.planned(step) if step else None
        return self.cluster_for(planned.side) if planned else None

    # --- the one deadline of the current step --------------------------------------------------

    @property
    def step_timeout(self) -> float:
        """How long one step (or undo action) may take: the plan's figure, else its type's."""
        step = self.current_step
        if step is None:
            return 0.0
        planned = self.planned(step) if self.current_action is None else None
        return planned.timeout if planned is not None else self.timing.timeout_for(step)

    @property
    def step_deadline(self) -> float | None:
        """When the current step fails for lack of time: its first attempt plus :attr:`step_timeout`,
        and never later than the run's own deadline (``timeouts.transitoryState``), except in
        compensation, which must be allowed to finish. None before the step's first attempt.

        The one deadline everybody uses: ``decide`` fails the step at it, the redrive sweep checks it,
        and a step that waits (a CronJob's Jobs) measures its grace period against it.
        """
        record = self.steps.get(self.step_key)
        if record is None or record.started_at is None:
            return None
        deadline = record.started_at + self.step_timeout
        return deadline if self.state is Phase.COMPENSATING else min(deadline, self.deadline_at)

    @property
    def reconcile_stamp(self) -> str:
        """The Flux ``reconcile.fluxcd.io/requestedAt`` value of this run: the stored one, else one
        derived from the run itself, so that two copies of a message write the same value."""
        if self.requested_at is not None:
            return self.requested_at
        started = self.started_at or self.created_at
        return datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @property
    def expected_owner(self) -> str | None:
        """The active cluster this run is valid for, checked under the lock: a failover moves the
        group away from its source, a stand-down keeps its owner (the target); a resolution sets it."""
        if self.kind in (PlanKind.CONSISTENCY, PlanKind.UPTIME):
            return self.source_cluster
        return self.target_cluster if self.kind is PlanKind.STANDDOWN else None

    @property
    def past_point_of_no_return(self) -> bool:
        """Whether the run reached its kind's point of no return (attempted, or skipped for lack of
        resources): from there on an automatic undo could make two writers (or none)."""
        step = POINT_OF_NO_RETURN[self.kind]
        return step is not None and step.value in self.steps

    @property
    def diverged(self) -> bool:
        """A run that failed past its point of no return, still owning its group: what is active
        where is no longer what DynamoDB says, and only an operator can settle it."""
        return self.failure is not None and self.failure.superseded is None and self.past_point_of_no_return

    def expects(self, step: Step, ticket: int) -> bool:
        """True when a message for ``step`` with ``ticket`` is the one this run waits for."""
        return (
            not self.terminal
            and self.paused_at is None
            and self.dispatch is not None
            and self.dispatch.step is step
            and self.dispatch.ticket == ticket
        )

    def downtime_seconds(self) -> float | None:
        """Measured downtime: from the source's network going off to the target's coming on.

        In UPTIME mode the target serves before the source goes dark, so the window is empty (0).
        None while either end is missing (e.g. a group without network resources or a failed run).
        """
        off = self.steps.get(Step.DISABLE_NETWORK.value)
        on = self.steps.get(Step.ENABLE_NETWORK.value)
        if off is None or on is None or off.started_at is None or on.finished_at is None:
            return None
        if off.outcome != "done" or on.outcome != "done":
            return None
        return max(0.0, on.finished_at - off.started_at)

    def total_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def skipped(self) -> list[str]:
        return [f"{key}: {rec.message}" for key, rec in self.steps.items() if rec.outcome == "skipped"]


def _pending(
    kind: PlanKind,
    group: FailoverGroup,
    *,
    source: str,
    target: str,
    now: float,
    timing: Timing | None,
    **fields: Any,
) -> Run:
    """A PENDING run of ``kind`` for ``group`` from ``source`` to ``target``; ``fields`` add the rest."""
    timing = timing or Timing()
    resources = Resources.of(group)
    return Run(
        group=group.key,
        kind=kind,
        source_cluster=source,
        target_cluster=target,
        resources=resources,
        pin=GroupPin.of(group, resources),
        plan=build_plan(kind, group, timing),
        timing=timing,
        created_at=now,
        deadline_at=now + group.spec.timeouts.transitory_state.total_seconds(),
        heartbeat_timeout=group.spec.timeouts.heartbeat.total_seconds(),
        **fields,
    )


def new_run(
    *,
    run_id: str,
    failover: Failover,
    group: FailoverGroup,
    source_cluster: str,
    now: float,
    timing: Timing | None = None,
    failover_cluster: str | None = None,
    nonce: str = "",
    drill: bool = False,
) -> Run:
    """A PENDING run of ``failover`` for ``group``, currently active on ``source_cluster`` (a drill
    when ``drill``). Pure."""
    spec = failover.spec
    return _pending(
        PlanKind.of(spec.failover_mode),
        group,
        source=source_cluster,
        target=spec.target_cluster,
        now=now,
        timing=timing,
        run_id=run_id,
        nonce=nonce,
        failover=f"{failover.metadata.namespace}/{failover.metadata.name}",
        failover_cluster=failover_cluster,
        force=spec.force,
        reason=spec.reason,
        drill=drill,
    )


def new_standdown_run(
    *,
    run_id: str,
    group: FailoverGroup,
    cluster: str,
    owner: str,
    reason: str,
    now: float,
    timing: Timing | None = None,
    nonce: str = "",
) -> Run:
    """A PENDING stand-down of ``cluster``, which still holds active objects of ``group`` although
    ``owner`` is the group's active cluster. Pure."""
    return _pending(
        PlanKind.STANDDOWN,
        group,
        source=cluster,
        target=owner,
        now=now,
        timing=timing,
        run_id=run_id,
        nonce=nonce,
        failover="",
        reason=reason,
    )


def new_resolve_run(
    *,
    run_id: str,
    group: FailoverGroup,
    passive: str,
    active: str,
    reason: str,
    now: float,
    timing: Timing | None = None,
    nonce: str = "",
) -> Run:
    """A PENDING resolution of a diverged ``group``: ``passive`` is made passive, then ``active`` active
    and recorded as the owner. Pure."""
    return _pending(
        PlanKind.RESOLVE,
        group,
        source=passive,
        target=active,
        now=now,
        timing=timing,
        run_id=run_id,
        nonce=nonce,
        failover="",
        reason=reason,
    )
