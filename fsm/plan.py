"""The plan: for each kind of run, the ordered steps with their stage, side, deadline and objects.

Pure: :func:`build_plan` only computes. It reads no cluster and no clock; who runs each step, on
which cluster, is the caller's business (``workers.engine``). Steps are data: adding an effect or a
wait is one :class:`Step` member with its :data:`CATALOGUE` entry (objects, role, label) and one
line in a sequence below; only a coordination step also needs a function in ``workers.steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from fsm.kinds import Role
from fsm.models import FailoverGroup, FailoverMode


class Step(StrEnum):
    """Every executable step. The value is the Celery task suffix: ``failover.<value>``."""

    VALIDATE = "validate"
    ACQUIRE_LOCK = "acquire_lock"
    RAISE_FENCE = "raise_fence"
    DISABLE_NETWORK = "disable_network"
    SCALE_DOWN_WORKLOADS = "scale_down_workloads"
    SUSPEND_FLUX = "suspend_flux"
    WAIT_SCALED_DOWN = "wait_scaled_down"
    DEMOTE_VOLUMES = "demote_volumes"
    WAIT_VOLUMES_DEMOTED = "wait_volumes_demoted"
    MARK_VOLUMES_RELEASED = "mark_volumes_released"
    WAIT_VOLUMES_RELEASED = "wait_volumes_released"
    PROMOTE_VOLUMES = "promote_volumes"
    WAIT_VOLUMES_PROMOTED = "wait_volumes_promoted"
    VERIFY_VOLUMES = "verify_volumes"
    SCALE_UP_WORKLOADS = "scale_up_workloads"
    RESUME_FLUX = "resume_flux"
    WAIT_READY = "wait_ready"
    ENABLE_NETWORK = "enable_network"
    COMPLETE = "complete"
    RECORD_STANDDOWN = "record_standdown"
    RECORD_RESOLUTION = "record_resolution"
    ABORT = "abort"


class Phase(StrEnum):
    """Where a run is when it is not at a step of its plan."""

    PENDING = "pending"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


# Where a run's machine is: at a step of its plan, or in one of the phases around them. One name per
# idea: a step is its own state (``Step.DEMOTE_VOLUMES``), shown in status by its catalogue label
# (``DEMOTING_VOLUMES``, docs/API.md's ``status.state``).
State = Step | Phase


def state_name(state: State) -> str:
    """``status.state``: a step's label (``SCALING_DOWN_WORKLOADS``), else the phase (``COMPENSATING``)."""
    return CATALOGUE[state].label if isinstance(state, Step) else state.name


def is_terminal(state: State) -> bool:
    return isinstance(state, Phase) and state.terminal


class Stage(StrEnum):
    """The original design's stages (docs/DESIGN-ORIGIN.md); a run crossing one writes a journal entry."""

    INITIALIZATION = "INITIALIZATION"
    SOURCE_PREPARATION = "SOURCE_PREPARATION"
    VOLUME_TRANSITION = "VOLUME_TRANSITION"
    TARGET_ACTIVATION = "TARGET_ACTIVATION"
    SOURCE_STANDDOWN = "SOURCE_STANDDOWN"
    COMPLETION = "COMPLETION"
    COMPENSATION = "COMPENSATION"


class Side(StrEnum):
    """Which cluster a step acts on; coordination steps act on DynamoDB only."""

    SOURCE = "source"
    TARGET = "target"
    COORDINATION = "coordination"


class Objects(StrEnum):
    """A set of the group's objects a step works on (see :class:`fsm.run.Resources`)."""

    WORKLOADS = "workloads"
    VOLUMES = "volumes"
    NETWORK = "network"
    FLUX = "flux"


class StepType(StrEnum):
    """An effect changes objects; a wait only reads them (and is polled); coordination is DynamoDB."""

    EFFECT = "effect"
    WAIT = "wait"
    COORDINATION = "coordination"


@dataclass(frozen=True)
class StepInfo:
    """One step as data: what it is, what it works on and, for effects and waits, the role it moves
    its objects to or waits for. Effects and waits with a ``role`` run from this entry alone (one
    generic effect, one generic wait in ``workers.steps``); the dry run reads the same entry.

    ``objects`` empty: the step needs no object (coordination). A step whose group has none of its
    objects is skipped, and the plan says why. ``label`` is the run's ``status.state`` at this step.
    """

    step: Step
    type: StepType
    label: str
    description: str
    objects: tuple[Objects, ...] = ()
    role: Role | None = None
    undo: tuple[Step, ...] = ()


_W, _V, _N, _F = Objects.WORKLOADS, Objects.VOLUMES, Objects.NETWORK, Objects.FLUX
_EFFECT, _WAIT, _COORD = StepType.EFFECT, StepType.WAIT, StepType.COORDINATION
_ACTIVE, _PASSIVE = Role.ACTIVE, Role.PASSIVE

CATALOGUE: dict[Step, StepInfo] = {
    info.step: info
    for info in (
        StepInfo(
            Step.VALIDATE,
            _COORD,
            "VALIDATING",
            "check that every object exists on both clusters and note the replica counts",
        ),
        StepInfo(
            Step.ACQUIRE_LOCK,
            _COORD,
            "ACQUIRING_LOCK",
            "take the group's lock and fencing token; check under it where the group is active",
        ),
        StepInfo(
            Step.RAISE_FENCE,
            _COORD,
            "RAISING_FENCE",
            "raise the group's fence to this run's token on every cluster that answers, before any change",
        ),
        StepInfo(
            Step.DISABLE_NETWORK,
            _EFFECT,
            "DISABLING_NETWORK",
            "tell external-dns to ignore the Ingresses and VirtualServices",
            (_N,),
            _PASSIVE,
            undo=(Step.ENABLE_NETWORK,),
        ),
        StepInfo(
            Step.SCALE_DOWN_WORKLOADS,
            _EFFECT,
            "SCALING_DOWN_WORKLOADS",
            "remember replicas, scale Deployments and StatefulSets to 0, suspend CronJobs",
            (_W,),
            _PASSIVE,
            undo=(Step.SCALE_UP_WORKLOADS, Step.WAIT_READY),
        ),
        StepInfo(
            Step.SUSPEND_FLUX,
            _EFFECT,
            "SUSPENDING_FLUX",
            "suspend the HelmReleases and Kustomizations",
            (_F,),
            _PASSIVE,
            undo=(Step.RESUME_FLUX,),
        ),
        StepInfo(
            Step.WAIT_SCALED_DOWN,
            _WAIT,
            "WAITING_FOR_SCALE_DOWN",
            "wait until no pod runs and no CronJob has an active Job",
            (_W,),
            _PASSIVE,
        ),
        StepInfo(
            Step.DEMOTE_VOLUMES,
            _EFFECT,
            "DEMOTING_VOLUMES",
            "set the VolumeReplications to secondary",
            (_V,),
            _PASSIVE,
            undo=(Step.PROMOTE_VOLUMES, Step.WAIT_VOLUMES_PROMOTED),
        ),
        StepInfo(
            Step.WAIT_VOLUMES_DEMOTED,
            _WAIT,
            "WAITING_FOR_VOLUME_DEMOTION",
            "wait until every VolumeReplication reports secondary",
            (_V,),
            _PASSIVE,
        ),
        StepInfo(
            Step.MARK_VOLUMES_RELEASED,
            _COORD,
            "MARKING_VOLUMES_RELEASED",
            "record in DynamoDB that the source let go of the volumes",
            (_V,),
        ),
        StepInfo(
            Step.WAIT_VOLUMES_RELEASED,
            _WAIT,
            "WAITING_FOR_VOLUME_RELEASE",
            "wait for the source's release record before promoting",
            (_V,),
        ),
        StepInfo(
            Step.PROMOTE_VOLUMES,
            _EFFECT,
            "PROMOTING_VOLUMES",
            "set the VolumeReplications to primary",
            (_V,),
            _ACTIVE,
            undo=(Step.DEMOTE_VOLUMES, Step.WAIT_VOLUMES_DEMOTED),
        ),
        StepInfo(
            Step.WAIT_VOLUMES_PROMOTED,
            _WAIT,
            "WAITING_FOR_VOLUME_PROMOTION",
            "wait until every VolumeReplication reports primary",
            (_V,),
            _ACTIVE,
        ),
        StepInfo(
            Step.VERIFY_VOLUMES,
            _WAIT,
            "VERIFYING_VOLUMES",
            "check primary, Completed=True and not Degraded on every volume",
            (_V,),
            _ACTIVE,
        ),
        StepInfo(
            Step.SCALE_UP_WORKLOADS,
            _EFFECT,
            "SCALING_UP_WORKLOADS",
            "restore replicas, resume CronJobs, re-enable Flux reconciliation",
            (_W,),
            _ACTIVE,
            undo=(Step.SCALE_DOWN_WORKLOADS, Step.WAIT_SCALED_DOWN),
        ),
        StepInfo(
            Step.RESUME_FLUX,
            _EFFECT,
            "RESUMING_FLUX",
            "resume the HelmReleases and Kustomizations and request a reconcile",
            (_F,),
            _ACTIVE,
            undo=(Step.SUSPEND_FLUX,),
        ),
        StepInfo(
            Step.WAIT_READY,
            _WAIT,
            "WAITING_FOR_READY",
            "wait until workloads are ready and Flux objects reconciled",
            (_W, _F),
            _ACTIVE,
        ),
        StepInfo(
            Step.ENABLE_NETWORK,
            _EFFECT,
            "ENABLING_NETWORK",
            "hand the Ingresses and VirtualServices back to external-dns",
            (_N,),
            _ACTIVE,
            undo=(Step.DISABLE_NETWORK,),
        ),
        StepInfo(Step.COMPLETE, _COORD, "COMPLETING", "flip the owner, record history, release the lock"),
        StepInfo(
            Step.RECORD_STANDDOWN,
            _COORD,
            "RECORDING_STANDDOWN",
            "record in history what the stand-down changed and release the lock",
        ),
        StepInfo(
            Step.RECORD_RESOLUTION, _COORD, "RECORDING_RESOLUTION", "record the owner, release the lock"
        ),
        StepInfo(Step.ABORT, _COORD, "ABORTING", "record the failed run in history and release the lock"),
    )
}


class PlanKind(StrEnum):
    """What a run does: the two failover modes of the API, and the orchestrator's own stand-down.

    STANDDOWN makes a site that came back after losing its groups passive (its workloads down, its
    volumes secondary, DNS off it) so that it never serves a group it no longer owns. It is never
    requested through the API; the health checker starts it.

    RESOLVE settles a diverged group (``failoverctl group resolve``): it makes one other cluster
    passive, then the chosen cluster active, and records the chosen cluster as the owner.
    """

    CONSISTENCY = "CONSISTENCY"
    UPTIME = "UPTIME"
    STANDDOWN = "STANDDOWN"
    RESOLVE = "RESOLVE"

    @classmethod
    def of(cls, mode: FailoverMode) -> PlanKind:
        """The plan kind of a requested failover mode."""
        return cls(mode.value)


_S, _T, _C = Side.SOURCE, Side.TARGET, Side.COORDINATION
_INIT, _PREP, _VOL = Stage.INITIALIZATION, Stage.SOURCE_PREPARATION, Stage.VOLUME_TRANSITION
_ACT, _DOWN, _DONE = Stage.TARGET_ACTIVATION, Stage.SOURCE_STANDDOWN, Stage.COMPLETION

Sequence = tuple[tuple[Step, Stage, Side], ...]

_LOCKED: Sequence = ((Step.ACQUIRE_LOCK, _INIT, _C), (Step.RAISE_FENCE, _INIT, _C))


def _source_down(stage: Stage) -> Sequence:
    """The source made passive: no traffic, no workloads, no reconciling, volumes secondary."""
    return (
        (Step.DISABLE_NETWORK, stage, _S),
        (Step.SCALE_DOWN_WORKLOADS, stage, _S),
        (Step.SUSPEND_FLUX, stage, _S),
        (Step.WAIT_SCALED_DOWN, stage, _S),
        (Step.DEMOTE_VOLUMES, stage, _S),
        (Step.WAIT_VOLUMES_DEMOTED, stage, _S),
    )


def _target_up(volumes: Stage, *, verify: bool = True) -> Sequence:
    """The target made active: volumes primary (and verified), workloads and Flux up, then traffic."""
    return (
        (Step.PROMOTE_VOLUMES, volumes, _T),
        (Step.WAIT_VOLUMES_PROMOTED, volumes, _T),
        *(((Step.VERIFY_VOLUMES, volumes, _T),) if verify else ()),
        (Step.SCALE_UP_WORKLOADS, _ACT, _T),
        (Step.RESUME_FLUX, _ACT, _T),
        (Step.WAIT_READY, _ACT, _T),
        (Step.ENABLE_NETWORK, _ACT, _T),
    )


_PREPARED, _DEMOTED = _source_down(_PREP)[:4], _source_down(_VOL)[4:]

SEQUENCES: dict[PlanKind, Sequence] = {
    # Never two writers: the source is fully down and its volumes secondary before the target moves.
    PlanKind.CONSISTENCY: (
        (Step.VALIDATE, _INIT, _C),
        *_LOCKED,
        *_PREPARED,
        *_DEMOTED,
        (Step.MARK_VOLUMES_RELEASED, _VOL, _C),
        (Step.WAIT_VOLUMES_RELEASED, _VOL, _C),
        *_target_up(_VOL),
        (Step.COMPLETE, _DONE, _C),
    ),
    # Service first: the target is up and takes traffic before the source stands down.
    PlanKind.UPTIME: (
        (Step.VALIDATE, _INIT, _C),
        *_LOCKED,
        *_target_up(_ACT),
        *_source_down(_DOWN),
        (Step.COMPLETE, _DONE, _C),
    ),
    # The "source" of a stand-down is the returning site; the lock keeps failovers of the group out.
    PlanKind.STANDDOWN: (*_LOCKED, *_source_down(_DOWN), (Step.RECORD_STANDDOWN, _DONE, _C)),
    # Settling a diverged group: the other cluster goes passive first (never two writers), then the
    # chosen one is made active, then the owner is recorded. Every effect is idempotent.
    PlanKind.RESOLVE: (
        *_LOCKED,
        *_source_down(_DOWN),
        *_target_up(_ACT, verify=False),
        (Step.RECORD_RESOLUTION, _DONE, _C),
    ),
}

# Past this step, undoing the run automatically could leave two writers (CONSISTENCY: the target's
# volumes may already be primary) or two stood-down sites (UPTIME: the source is going dark while the
# target already serves); a failure from here on is recorded and left to the operator.
# A stand-down is never undone (None): bringing the site back up would make it serve a group it does
# not own; nor is a resolution (the operator chose the owner; a half-settled group stays diverged).
POINT_OF_NO_RETURN: dict[PlanKind, Step | None] = {
    PlanKind.CONSISTENCY: Step.PROMOTE_VOLUMES,
    PlanKind.UPTIME: Step.DISABLE_NETWORK,
    PlanKind.STANDDOWN: None,
    PlanKind.RESOLVE: None,
}


class Timing(BaseModel):
    """Deadlines and backoff. Defaults suit real clusters; tests pass shorter ones."""

    model_config = ConfigDict(frozen=True)

    effect_timeout: float = 120.0
    wait_timeout: float = 600.0
    coordination_timeout: float = 60.0
    poll_initial: float = 1.0
    poll_factor: float = 1.5
    poll_max: float = 15.0
    retry_initial: float = 1.0
    retry_max: float = 30.0
    max_attempts: int = 6
    # Countdown before a wait's first check, sent right after the step that asked for the change
    # (None: half of poll_initial, at most 0.5 s). Objects never reach their state within a request's
    # time, so a check at once only costs a round of reads; a woken wait registers at this check.
    first_check: float | None = None

    def first_check_delay(self) -> float:
        return min(0.5, self.poll_initial / 2) if self.first_check is None else self.first_check

    def timeout_for(self, step: Step) -> float:
        """The deadline of one attempt at ``step``, from its type (effect, wait, coordination)."""
        timeouts: dict[StepType, float] = {
            StepType.EFFECT: self.effect_timeout,
            StepType.WAIT: self.wait_timeout,
            StepType.COORDINATION: self.coordination_timeout,
        }
        return timeouts[CATALOGUE[step].type]

    def poll_delay(self, checks: int) -> float:
        """Countdown before the ``checks``-th re-check of a wait step: short, then growing."""
        return min(self.poll_max, self.poll_initial * self.poll_factor ** max(0, checks - 1))

    def retry_delay(self, errors: int, jitter: float, retry_after: float | None = None) -> float:
        """Exponential backoff with equal jitter (``jitter`` in [0, 1) is drawn by the caller)."""
        ceiling = min(self.retry_max, self.retry_initial * 2.0 ** max(0, errors - 1))
        delay = ceiling / 2 + ceiling / 2 * jitter
        return max(delay, retry_after or 0.0)


class PlannedStep(BaseModel):
    """One step of one run: what, where and why it may be skipped."""

    model_config = ConfigDict(frozen=True)

    step: Step
    stage: Stage
    side: Side
    timeout: float
    skip_reason: str | None = None


_MISSING: dict[Objects, str] = {
    Objects.WORKLOADS: "workloads",
    Objects.VOLUMES: "VolumeReplications",
    Objects.NETWORK: "Ingresses or VirtualServices",
    Objects.FLUX: "HelmReleases or Kustomizations",
}


def skip_reason(info: StepInfo, group: FailoverGroup) -> str | None:
    """Why ``info``'s step has nothing to do for ``group`` (none of its objects), or None. Pure."""
    if not info.objects:
        return None
    spec = group.spec
    present = {
        Objects.WORKLOADS: bool(spec.workloads),
        Objects.VOLUMES: any(w.volume_replications for w in spec.workloads),
        Objects.NETWORK: bool(spec.network_resources),
        Objects.FLUX: bool(spec.flux_resources),
    }
    if any(present[objects] for objects in info.objects):
        return None
    return f"the group has no {' and no '.join(_MISSING[o] for o in info.objects)}"


def build_plan(kind: PlanKind, group: FailoverGroup, timing: Timing | None = None) -> list[PlannedStep]:
    """The ordered steps of a ``kind`` run applied to ``group``. Pure.

    Steps whose objects the group lacks stay in the plan with a ``skip_reason``, so that the run's
    status can say what was skipped and why instead of silently doing less.
    """
    timing = timing or Timing()
    return [
        PlannedStep(
            step=step,
            stage=stage,
            side=side,
            timeout=timing.timeout_for(step),
            skip_reason=skip_reason(CATALOGUE[step], group),
        )
        for step, stage, side in SEQUENCES[kind]
    ]
