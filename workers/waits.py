"""Waits woken by events: what a waiting step registers, and the decision to wake it.

A wait step (``StepType.WAIT`` in ``fsm.plan.CATALOGUE``) that finds its objects not there yet is
sent again after a countdown (1 s growing to 15 s: ``fsm.plan.Timing.poll_delay``). So that it is
not left waiting up to that long, the engine registers, right after it committed the re-check, what
the step waits for: the objects (cluster, kind, namespace, name), the role and the ticket of the
message it just sent (:meth:`WaitRegistry.register`). A waker that watches those kinds on each
cluster (``producers.waker``, in the watcher process: one watch per cluster and kind, shared by all
runs) hands every event to :meth:`Wakes.on_object`: when the object now has the role a registered
run waits for (judged by ``fsm.kinds.judge``, as the step judges it), the run's message for that
ticket is sent again at once. The step then re-reads its objects itself, so a wake that proves
premature costs one check.

Idempotent with the polling countdown: a wake sends the message of the very ticket the run expects
(``Run.expects``), claimed once per ticket (:meth:`WaitRegistry.claim`, SET NX), so several events
or two wakers send it once; the countdown's copy of the same ticket then finds the run moved on and
is dropped as stale, and if both copies run at once the compare-and-set on the run lets one commit.
Polling stays as it was, the fallback for lost watches, a waker that is not running, and an event
that arrived between the step's read and its registration (the waker's resync also catches that).

The registry is a port (:class:`WaitRegistry`); :mod:`workers.wait_store` is its Redis adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from fsm.decide import Decision, Event, EventKind
from fsm.kinds import KindError, judge
from fsm.plan import CATALOGUE, Step, StepType
from fsm.run import Run
from workers.errors import OrchestratorError
from workers.messages import Sender, task_name
from workers.metrics import observe_wake
from workers.ports import Role

log = structlog.get_logger(__name__)

Obj = Mapping[str, Any]

# The kinds wait steps wait for, by the ``kind`` of their references: what a waker watches.
WATCHED_KINDS = (
    "Deployment",
    "StatefulSet",
    "CronJob",
    "Ingress",
    "VirtualService",
    "HelmRelease",
    "Kustomization",
    "VolumeReplication",
)


@dataclass(frozen=True)
class WaitTarget:
    """One object a step waits for."""

    cluster: str
    kind: str
    namespace: str
    name: str

    @property
    def object_key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Registration:
    """What a waiting run expects of the object: ``role`` (with the reconcile stamp for Flux objects)
    and the message to send when it holds: ``step`` with ``ticket``, to the run's ``cluster`` queue."""

    step: Step
    ticket: int
    role: Role
    cluster: str
    requested_at: str | None = None
    targets: tuple[WaitTarget, ...] = ()


Lookup = Callable[[WaitTarget], Obj | None]


class WaitRegistry(Protocol):
    """Where waiting runs are found by object (Redis in production: :mod:`workers.wait_store`)."""

    def register(
        self, run_id: str, targets: Sequence[WaitTarget], registration: Registration, *, ttl: float
    ) -> None:
        """Record that ``run_id`` waits for ``targets`` (replacing what it waited for before)."""

    def clear(self, run_id: str) -> None:
        """Forget what ``run_id`` waits for (its wait ended)."""

    def registrations(self, target: WaitTarget) -> dict[str, Registration]:
        """The runs waiting for ``target``, by run id."""

    def registered(self, cluster: str, kind: str) -> list[WaitTarget]:
        """Every object of ``kind`` on ``cluster`` that some run waits for (for a resync pass)."""

    def claim(self, run_id: str, ticket: int, *, at: float, ttl: float) -> bool:
        """True once per (run, ticket): the caller may send that wake; ``at`` is the event's time."""

    def taken(self, run_id: str, ticket: int, step: Step) -> float | None:
        """Called when a step starts: the time of the event that woke this ticket (None: not woken),
        counting the wake in the run's record of wakes (:meth:`woken`)."""

    def woken(self, run_id: str) -> dict[str, int]:
        """How many attempts of each step of the run were started by a wake."""


def is_object_wait(step: Step) -> bool:
    """A wait on objects (that a watch event can wake), not on DynamoDB."""
    info = CATALOGUE.get(step)
    return info is not None and info.type is StepType.WAIT and info.role is not None


def wait_targets(run: Run, step: Step) -> tuple[Registration, list[WaitTarget]] | None:
    """What a re-check of ``step`` (a wait on objects) waits for, or None for any other step."""
    info = CATALOGUE.get(step)
    cluster, dispatch = run.current_cluster, run.dispatch
    if info is None or not is_object_wait(step) or info.role is None or cluster is None:
        return None
    if dispatch is None or dispatch.step is not step:
        return None
    refs = run.resources.select(info.objects)
    targets = [WaitTarget(cluster, ref.kind, ref.namespace, ref.name) for ref in refs]
    if not targets:
        return None
    requested_at = run.requested_at if any(run.resources.reconciled(ref) for ref in refs) else None
    registration = Registration(
        step=step,
        ticket=dispatch.ticket,
        role=info.role,
        cluster=cluster,
        requested_at=requested_at,
        targets=tuple(targets),
    )
    return registration, targets


def taken_at(
    registry: WaitRegistry | None, run_id: str, step: Step, ticket: int, started: float
) -> float | None:
    """When the event that woke this starting attempt of ``step`` came (None: its countdown did, or
    it is no watched wait); a wake is counted and its reaction latency observed (metrics)."""
    if registry is None or not is_object_wait(step):
        return None
    try:
        at = registry.taken(run_id, ticket, step)
    except OrchestratorError:
        return None
    if at is not None:
        observe_wake(step.value, max(0.0, started - at))
        log.info("step.woken", run_id=run_id, ticket=ticket, reaction=round(started - at, 3))
    return at


def note_outcome(
    registry: WaitRegistry | None,
    before: Run,
    event: Event,
    decision: Decision | None,
    *,
    woken: bool,
    margin: float,
) -> None:
    """After an attempt of a wait committed (``decision``): register what it waits for if it waits
    again, else forget what it registered, if it ever did. Best effort: without a registration the
    step is still polled. ``margin``: how long a registration outlives its countdown."""
    step = event.step
    if (
        registry is None
        or step is None
        or not is_object_wait(step)
        or decision is None
        or not decision.changed
    ):
        return
    try:
        wanted = wait_targets(decision.run, step) if event.kind is EventKind.WAITING else None
        record = before.steps.get(before.step_key)
        if wanted is not None and decision.dispatch is not None:
            registration, targets = wanted
            registry.register(before.run_id, targets, registration, ttl=decision.dispatch.countdown + margin)
        elif woken or (record is not None and record.checks > 0):
            registry.clear(before.run_id)
    except OrchestratorError as error:
        log.warning("wait.register_failed", run_id=before.run_id, step=step.value, error=error.describe())


def ready(kind: str, obj: Obj, registration: Registration) -> bool:
    """Whether ``obj`` now holds what the registered run waits for (the step's own judgement)."""
    try:
        reached, _detail = judge(kind, obj, registration.role, requested_at=registration.requested_at)
    except KindError:
        return False
    return reached


def target_of(cluster: str, kind: str, obj: Obj) -> WaitTarget | None:
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    if not namespace or not name:
        return None
    return WaitTarget(cluster, kind, str(namespace), str(name))


class Wakes:
    """The waker's side: an object seen (by a watch event or a resync) wakes the runs waiting for it.

    ``claim_ttl``: how long a (run, ticket) stays claimed: longer than a message takes to run.
    """

    def __init__(self, registry: WaitRegistry, sender: Sender, *, claim_ttl: float = 600.0) -> None:
        self.registry = registry
        self.sender = sender
        self.claim_ttl = claim_ttl

    def on_object(
        self, cluster: str, kind: str, obj: Obj, *, at: float, lookup: Lookup | None = None
    ) -> list[str]:
        """Wake the runs waiting for ``obj`` that it now satisfies; returns their ids.

        ``lookup``: the waker's cache of the objects last seen; with it, a run is woken only when every
        object it waits for holds (a wait on several objects is not woken by the one already there).
        """
        target = target_of(cluster, kind, obj)
        if target is None:
            return []
        woken = []
        for run_id, registration in self.registry.registrations(target).items():
            if not ready(kind, obj, registration) or not self._all_ready(registration, target, lookup):
                continue
            if not self.registry.claim(run_id, registration.ticket, at=at, ttl=self.claim_ttl):
                continue  # this ticket was woken already (another event, another waker)
            self.sender.send(
                task_name(registration.step),
                run_id,
                registration.ticket,
                countdown=0.0,
                cluster=registration.cluster,
            )
            log.info(
                "wait.woken",
                run_id=run_id,
                step=registration.step.value,
                ticket=registration.ticket,
                cluster=cluster,
                obj=f"{kind} {target.object_key}",
            )
            woken.append(run_id)
        return woken

    @staticmethod
    def _all_ready(registration: Registration, seen: WaitTarget, lookup: Lookup | None) -> bool:
        if lookup is None:
            return True
        for other in registration.targets:
            if other == seen:
                continue
            obj = lookup(other)
            if obj is None or not ready(other.kind, obj, registration):
                return False
        return True
