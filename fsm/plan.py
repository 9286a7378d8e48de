"""The plan: for each mode, the ordered steps with their stage, side, deadline and retry policy.

Pure: :func:`build_plan` only computes. It reads no cluster and no clock; who runs each step, on
which cluster, is the caller's business (``workers.engine``). Adding a step is one entry in
:data:`CATALOGUE`, one line in a mode's sequence below, and one function in ``workers.steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from pydantic import BaseModel, ConfigDict

from fsm.models import FailoverGroup, FailoverMode


class Step(StrEnum):
    """Every executable step. The value is the Celery task suffix: ``failover.<value>``."""

    VALIDATE = "validate"
    ACQUIRE_LOCK = "acquire_lock"
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
    ABORT = "abort"


class State(Enum):
    """Where a run's machine is. Step states are named as docs/API.md's ``status.state`` (upper snake)."""

    PENDING = "pending"
    VALIDATING = Step.VALIDATE.value
    ACQUIRING_LOCK = Step.ACQUIRE_LOCK.value
    DISABLING_NETWORK = Step.DISABLE_NETWORK.value
    SCALING_DOWN_WORKLOADS = Step.SCALE_DOWN_WORKLOADS.value
    SUSPENDING_FLUX = Step.SUSPEND_FLUX.value
    WAITING_FOR_SCALE_DOWN = Step.WAIT_SCALED_DOWN.value
    DEMOTING_VOLUMES = Step.DEMOTE_VOLUMES.value
    WAITING_FOR_VOLUME_DEMOTION = Step.WAIT_VOLUMES_DEMOTED.value
    MARKING_VOLUMES_RELEASED = Step.MARK_VOLUMES_RELEASED.value
    WAITING_FOR_VOLUME_RELEASE = Step.WAIT_VOLUMES_RELEASED.value
    PROMOTING_VOLUMES = Step.PROMOTE_VOLUMES.value
    WAITING_FOR_VOLUME_PROMOTION = Step.WAIT_VOLUMES_PROMOTED.value
    VERIFYING_VOLUMES = Step.VERIFY_VOLUMES.value
    SCALING_UP_WORKLOADS = Step.SCALE_UP_WORKLOADS.value
    RESUMING_FLUX = Step.RESUME_FLUX.value
    WAITING_FOR_READY = Step.WAIT_READY.value
    ENABLING_NETWORK = Step.ENABLE_NETWORK.value
    COMPLETING = Step.COMPLETE.value
    RECORDING_STANDDOWN = Step.RECORD_STANDDOWN.value
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def step(self) -> Step | None:
        """The step this state runs, or None for PENDING, COMPENSATING and the terminal states."""
        return _STEP_BY_VALUE.get(self.value)

    @property
    def terminal(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED)


_STEP_BY_VALUE = {s.value: s for s in Step}


def state_of(step: Step) -> State:
    return State(step.value)


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


class Needs(StrEnum):
    """The resources a step works on: a step whose group has none of them is skipped."""

    NOTHING = "nothing"
    NETWORK = "network"
    WORKLOADS = "workloads"
    FLUX = "flux"
    VOLUMES = "volumes"
    WORKLOADS_OR_FLUX = "workloads_or_flux"


class Kind(StrEnum):
    """An effect changes objects; a wait only reads them (and is polled); coordination is DynamoDB."""

    EFFECT = "effect"
    WAIT = "wait"
    COORDINATION = "coordination"


@dataclass(frozen=True)
class StepInfo:
    step: Step
    kind: Kind
    needs: Needs
    description: str
    undo: tuple[Step, ...] = ()


CATALOGUE: dict[Step, StepInfo] = {
    info.step: info
    for info in (
        StepInfo(
            Step.VALIDATE,
            Kind.COORDINATION,
            Needs.NOTHING,
            "check the request against the active cluster and both clusters' objects",
        ),
        StepInfo(
            Step.ACQUIRE_LOCK, Kind.COORDINATION, Needs.NOTHING, "take the group's lock and its fencing token"
        ),
        StepInfo(
            Step.DISABLE_NETWORK,
            Kind.EFFECT,
            Needs.NETWORK,
            "tell external-dns to ignore the Ingresses and VirtualServices",
            undo=(Step.ENABLE_NETWORK,),
        ),
        StepInfo(
            Step.SCALE_DOWN_WORKLOADS,
            Kind.EFFECT,
            Needs.WORKLOADS,
            "remember replicas, scale Deployments and StatefulSets to 0, suspend CronJobs",
            undo=(Step.SCALE_UP_WORKLOADS, Step.WAIT_READY),
        ),
        StepInfo(
            Step.SUSPEND_FLUX,
            Kind.EFFECT,
            Needs.FLUX,
            "suspend the HelmReleases and Kustomizations",
            undo=(Step.RESUME_FLUX,),
        ),
        StepInfo(
            Step.WAIT_SCALED_DOWN,
            Kind.WAIT,
            Needs.WORKLOADS,
            "wait until no pod runs and no CronJob has an active Job",
        ),
        StepInfo(
            Step.DEMOTE_VOLUMES,
            Kind.EFFECT,
            Needs.VOLUMES,
            "set the VolumeReplications to secondary",
            undo=(Step.PROMOTE_VOLUMES, Step.WAIT_VOLUMES_PROMOTED),
        ),
        StepInfo(
            Step.WAIT_VOLUMES_DEMOTED,
            Kind.WAIT,
            Needs.VOLUMES,
            "wait until every VolumeReplication reports secondary",
        ),
        StepInfo(
            Step.MARK_VOLUMES_RELEASED,
            Kind.COORDINATION,
            Needs.VOLUMES,
            "record in DynamoDB that the source let go of the volumes",
        ),
        StepInfo(
            Step.WAIT_VOLUMES_RELEASED,
            Kind.WAIT,
            Needs.VOLUMES,
            "wait for the source's release record before promoting",
        ),
        StepInfo(
            Step.PROMOTE_VOLUMES,
            Kind.EFFECT,
            Needs.VOLUMES,
            "set the VolumeReplications to primary",
            undo=(Step.DEMOTE_VOLUMES, Step.WAIT_VOLUMES_DEMOTED),
        ),
        StepInfo(
            Step.WAIT_VOLUMES_PROMOTED,
            Kind.WAIT,
            Needs.VOLUMES,
            "wait until every VolumeReplication reports primary",
        ),
        StepInfo(
            Step.VERIFY_VOLUMES,
            Kind.WAIT,
            Needs.VOLUMES,
            "check primary, Completed=True and not Degraded on every volume",
        ),
        StepInfo(
            Step.SCALE_UP_WORKLOADS,
            Kind.EFFECT,
            Needs.WORKLOADS,
            "restore replicas, resume CronJobs, re-enable Flux reconciliation",
            undo=(Step.SCALE_DOWN_WORKLOADS, Step.WAIT_SCALED_DOWN),
        ),
        StepInfo(
            Step.RESUME_FLUX,
            Kind.EFFECT,
            Needs.FLUX,
            "resume the HelmReleases and Kustomizations and request a reconcile",
            undo=(Step.SUSPEND_FLUX,),
        ),
        StepInfo(
            Step.WAIT_READY,
            Kind.WAIT,
            Needs.WORKLOADS_OR_FLUX,
            "wait until workloads are ready and Flux objects reconciled",
        ),
        StepInfo(
            Step.ENABLE_NETWORK,
            Kind.EFFECT,
            Needs.NETWORK,
            "hand the Ingresses and VirtualServices back to external-dns",
            undo=(Step.DISABLE_NETWORK,),
        ),
        StepInfo(
            Step.COMPLETE,
            Kind.COORDINATION,
            Needs.NOTHING,
            "flip the active cluster, record history and release the lock in one transaction",
        ),
        StepInfo(
            Step.RECORD_STANDDOWN,
            Kind.COORDINATION,
            Needs.NOTHING,
            "record in history what the stand-down changed and release the lock",
        ),
        StepInfo(
            Step.ABORT,
            Kind.COORDINATION,
            Needs.NOTHING,
            "record the failed run in history and release the lock",
        ),
    )
}


class PlanKind(StrEnum):
    """What a run does: the two failover modes of the API, and the orchestrator's own stand-down.

    STANDDOWN makes a site that came back after losing its groups passive (its workloads down, its
    volumes secondary, DNS off it) so that it never serves a group it no longer owns. It is never
    requested through the API; the health checker starts it.
    """

    CONSISTENCY = "CONSISTENCY"
    UPTIME = "UPTIME"
    STANDDOWN = "STANDDOWN"

    @classmethod
    def of(cls, mode: FailoverMode | PlanKind) -> PlanKind:
        return cls(mode.value)


_S, _T, _C = Side.SOURCE, Side.TARGET, Side.COORDINATION
_INIT, _PREP, _VOL = Stage.INITIALIZATION, Stage.SOURCE_PREPARATION, Stage.VOLUME_TRANSITION
_ACT, _DOWN, _DONE = Stage.TARGET_ACTIVATION, Stage.SOURCE_STANDDOWN, Stage.COMPLETION

SEQUENCES: dict[PlanKind, tuple[tuple[Step, Stage, Side], ...]] = {
    # Never two writers: the source is fully down and its volumes secondary before the target moves.
    PlanKind.CONSISTENCY: (
        (Step.VALIDATE, _INIT, _C),
        (Step.ACQUIRE_LOCK, _INIT, _C),
        (Step.DISABLE_NETWORK, _PREP, _S),
        (Step.SCALE_DOWN_WORKLOADS, _PREP, _S),
        (Step.SUSPEND_FLUX, _PREP, _S),
        (Step.WAIT_SCALED_DOWN, _PREP, _S),
        (Step.DEMOTE_VOLUMES, _VOL, _S),
        (Step.WAIT_VOLUMES_DEMOTED, _VOL, _S),
        (Step.MARK_VOLUMES_RELEASED, _VOL, _C),
        (Step.WAIT_VOLUMES_RELEASED, _VOL, _C),
        (Step.PROMOTE_VOLUMES, _VOL, _T),
        (Step.WAIT_VOLUMES_PROMOTED, _VOL, _T),
        (Step.VERIFY_VOLUMES, _VOL, _T),
        (Step.SCALE_UP_WORKLOADS, _ACT, _T),
        (Step.RESUME_FLUX, _ACT, _T),
        (Step.WAIT_READY, _ACT, _T),
        (Step.ENABLE_NETWORK, _ACT, _T),
        (Step.COMPLETE, _DONE, _C),
    ),
    # Service first: the target is up and takes traffic before the source stands down.
    PlanKind.UPTIME: (
        (Step.VALIDATE, _INIT, _C),
        (Step.ACQUIRE_LOCK, _INIT, _C),
        (Step.PROMOTE_VOLUMES, _ACT, _T),
        (Step.WAIT_VOLUMES_PROMOTED, _ACT, _T),
        (Step.VERIFY_VOLUMES, _ACT, _T),
        (Step.SCALE_UP_WORKLOADS, _ACT, _T),
        (Step.RESUME_FLUX, _ACT, _T),
        (Step.WAIT_READY, _ACT, _T),
        (Step.ENABLE_NETWORK, _ACT, _T),
        (Step.DISABLE_NETWORK, _DOWN, _S),
        (Step.SCALE_DOWN_WORKLOADS, _DOWN, _S),
        (Step.SUSPEND_FLUX, _DOWN, _S),
        (Step.WAIT_SCALED_DOWN, _DOWN, _S),
        (Step.DEMOTE_VOLUMES, _DOWN, _S),
        (Step.WAIT_VOLUMES_DEMOTED, _DOWN, _S),
        (Step.COMPLETE, _DONE, _C),
    ),
}

STANDDOWN_SEQUENCE: tuple[tuple[Step, Stage, Side], ...] = (
    # The "source" of a stand-down is the returning site; the lock keeps failovers of the group out.
    (Step.ACQUIRE_LOCK, _INIT, _C),
    (Step.DISABLE_NETWORK, _DOWN, _S),
    (Step.SCALE_DOWN_WORKLOADS, _DOWN, _S),
    (Step.SUSPEND_FLUX, _DOWN, _S),
    (Step.WAIT_SCALED_DOWN, _DOWN, _S),
    (Step.DEMOTE_VOLUMES, _DOWN, _S),
    (Step.WAIT_VOLUMES_DEMOTED, _DOWN, _S),
    (Step.RECORD_STANDDOWN, _DONE, _C),
)
SEQUENCES[PlanKind.STANDDOWN] = STANDDOWN_SEQUENCE

# Past this step, undoing the run automatically could leave two writers (CONSISTENCY: the target's
# volumes may already be primary) or two stood-down sites (UPTIME: the source is going dark while the
# target already serves); a failure from here on is recorded and left to the operator.
# A stand-down is never undone (None): bringing the site back up would make it serve a group it does
# not own.
POINT_OF_NO_RETURN: dict[PlanKind, Step | None] = {
    PlanKind.CONSISTENCY: Step.PROMOTE_VOLUMES,
    PlanKind.UPTIME: Step.DISABLE_NETWORK,
    PlanKind.STANDDOWN: None,
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

    def timeout_for(self, kind: Kind) -> float:
        timeouts: dict[Kind, float] = {
            Kind.EFFECT: self.effect_timeout,
            Kind.WAIT: self.wait_timeout,
            Kind.COORDINATION: self.coordination_timeout,
        }
        return timeouts[kind]

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


def _skip_reason(needs: Needs, group: FailoverGroup) -> str | None:
    spec = group.spec
    has_volumes = any(w.volume_replications for w in spec.workloads)
    missing = {
        Needs.NOTHING: None,
        Needs.NETWORK: None if spec.network_resources else "the group has no Ingresses or VirtualServices",
        Needs.WORKLOADS: None if spec.workloads else "the group has no workloads",
        Needs.FLUX: None if spec.flux_resources else "the group has no HelmReleases or Kustomizations",
        Needs.VOLUMES: None if has_volumes else "the group has no VolumeReplications",
        Needs.WORKLOADS_OR_FLUX: None
        if spec.workloads or spec.flux_resources
        else "the group has no workloads and no Flux resources",
    }
    return missing[needs]


def build_plan(
    mode: FailoverMode | PlanKind, group: FailoverGroup, timing: Timing | None = None
) -> list[PlannedStep]:
    """The ordered steps for ``mode`` applied to ``group``. Pure.

    Steps whose resources the group lacks stay in the plan with a ``skip_reason``, so that the run's
    status can say what was skipped and why instead of silently doing less.
    """
    timing = timing or Timing()
    plan = []
    for step, stage, side in SEQUENCES[PlanKind.of(mode)]:
        info = CATALOGUE[step]
        plan.append(
            PlannedStep(
                step=step,
                stage=stage,
                side=side,
                timeout=timing.timeout_for(info.kind),
                skip_reason=_skip_reason(info.needs, group),
            )
        )
    return plan
