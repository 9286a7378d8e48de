"""Health of a FailoverGroup on each cluster, and when to fail it over automatically.

Pure: every function here only computes. It reads no cluster, no clock, no environment and logs
nothing; the health checker (``producers.health``) reads the objects and the heartbeats, passes them in
with ``now`` and performs what the returned decision names (write heartbeats, create a ``Failover``
object). The decision carries a sentence saying why, which the tests assert and the checker logs once.

Judging one cluster (documented rules, simple on purpose)
-------------------------------------------------------

Each resource of the group is judged against the role its cluster should play: PRIMARY (the active
cluster recorded in DynamoDB) or STANDBY. A missing object is ERROR everywhere.

=================  ==========================================  =========================================
kind               PRIMARY                                     STANDBY
=================  ==========================================  =========================================
Deployment,        OK when ready = spec replicas and the       OK when spec and status replicas are 0;
StatefulSet        controller caught up; ERROR when none is     else DEGRADED (running, or still scaling
                   ready; DEGRADED otherwise (partly ready,     down)
                   rolling out, scaled to 0)
CronJob            OK when not suspended, else DEGRADED         OK when suspended with no active Job;
                                                                else DEGRADED
VolumeReplication  OK when ``status.state`` is primary and not  OK when secondary and not Degraded;
                   Degraded; DEGRADED when Degraded; ERROR      DEGRADED when Degraded; ERROR when
                   when not primary (nothing can write)         primary (two writers)
Ingress,           OK when the external-dns annotation says    OK when it says ``ignore``; else DEGRADED
VirtualService     ``dns-controller``; else DEGRADED
HelmRelease,       OK when not suspended and not Ready=False;   OK when suspended; else DEGRADED
Kustomization      else DEGRADED
=================  ==========================================  =========================================

The cluster's health is the worst of its resources (OK < DEGRADED < ERROR), or UNKNOWN when the
cluster did not answer.

Automatic failover
------------------

See :func:`decide`. In short: only when the active cluster's heartbeat is older than
``timeouts.heartbeat`` (the Failover then carries ``force: true``) or it has reported ERROR for
``timeouts.unhealthyPrimary``; never while the group is ``suspended``, while any run holds the group's
lock, while an automatic Failover of the group is in flight, or within the cool-down after the last
automatic one; and only to a standby with a fresh heartbeat, OK before DEGRADED.

A site that came back
---------------------

See :func:`decide_stand_down`: a cluster that is not the group's active cluster, answers and still holds
active objects of the group (:func:`active_objects`) is stood down, unless a run holds the group's lock
(a failover in flight makes its target look active before the owner flips). Never the owner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from fsm.models import (
    ANNOTATION_REPLICAS,
    GROUP_VERSION,
    VOLUME_REPLICATION,
    FailoverGroup,
    FailoverMode,
    ResourceRef,
)

LABEL_AUTOMATIC = "failover.hahomelabs.com/automatic"
LABEL_GROUP = "failover.hahomelabs.com/group"
AUTOMATIC_REASON_PREFIX = "automatic failover"
ANNOTATION_DNS_CONTROLLER = "external-dns.alpha.kubernetes.io/controller"
DNS_ACTIVE = "dns-controller"
DNS_PASSIVE = "ignore"

_WORKLOADS = frozenset({"Deployment", "StatefulSet"})
_NETWORK = frozenset({"Ingress", "VirtualService"})
_FLUX = frozenset({"HelmRelease", "Kustomization"})

Obj = Mapping[str, Any]


class Health(StrEnum):
    OK = "OK"
    DEGRADED = "DEGRADED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


class ClusterRole(StrEnum):
    PRIMARY = "PRIMARY"
    STANDBY = "STANDBY"


_SEVERITY = {Health.OK: 0, Health.DEGRADED: 1, Health.ERROR: 2, Health.UNKNOWN: 3}


def worst(healths: Sequence[Health]) -> Health:
    """The most severe of ``healths`` (OK when empty)."""
    return max(healths, key=_SEVERITY.__getitem__, default=Health.OK)


# --- judging objects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceHealth:
    ref: ResourceRef
    health: Health
    status: str


@dataclass(frozen=True)
class GroupHealth:
    """How one group looks on one cluster, judged against the role the cluster should play."""

    cluster: str
    role: ClusterRole
    health: Health
    resources: tuple[ResourceHealth, ...] = ()
    detail: str = ""

    @property
    def reachable(self) -> bool:
        return self.health is not Health.UNKNOWN

    def summary(self) -> dict[str, str]:
        """``{"Deployment shop/web": "OK: 3/3 ready", ...}``: the heartbeat's ``resources``."""
        return {f"{r.ref.kind}/{r.ref.name}": f"{r.health.value}: {r.status}" for r in self.resources}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _condition(obj: Obj, type_: str) -> Obj | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def _judge_workload(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    desired = _int(spec.get("replicas"), 1)
    ready = _int(status.get("readyReplicas"))
    running = _int(status.get("replicas"))
    generation = _int((obj.get("metadata") or {}).get("generation"), 0)
    caught_up = _int(status.get("observedGeneration"), 0) >= generation
    if role is ClusterRole.STANDBY:
        if desired == 0 and running == 0 and ready == 0:
            remembered = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_REPLICAS)
            return Health.OK, f"passive (0 replicas{f', {remembered} remembered' if remembered else ''})"
        if desired == 0:
            return Health.DEGRADED, f"scaling down: {running} replicas left"
        return Health.DEGRADED, f"{ready}/{desired} ready on a standby, expected 0"
    if desired == 0:
        return Health.DEGRADED, "scaled to 0 on the primary"
    if ready >= desired and caught_up:
        return Health.OK, f"{ready}/{desired} ready"
    if ready == 0:
        return Health.ERROR, f"0/{desired} ready"
    return Health.DEGRADED, f"{ready}/{desired} ready" + ("" if caught_up else ", rolling out")


def _judge_cron_job(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    suspended = bool((obj.get("spec") or {}).get("suspend"))
    active = len((obj.get("status") or {}).get("active") or [])
    if role is ClusterRole.PRIMARY:
        return (Health.OK, "scheduled") if not suspended else (Health.DEGRADED, "suspended on the primary")
    if not suspended:
        return Health.DEGRADED, "scheduled on a standby, expected suspended"
    if active:
        return Health.DEGRADED, f"suspended, {active} Job(s) still running"
    return Health.OK, "suspended"


def _judge_volume(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    state = str((obj.get("status") or {}).get("state") or "unknown").lower()
    degraded = _condition(obj, "Degraded")
    is_degraded = degraded is not None and degraded.get("status") == "True"
    wanted = "primary" if role is ClusterRole.PRIMARY else "secondary"
    if state != wanted:
        if role is ClusterRole.PRIMARY:
            return Health.ERROR, f"state {state}, expected primary"
        if state == "primary":
            return Health.ERROR, "primary on a standby: two writers"
        return Health.DEGRADED, f"state {state}, expected secondary"
    if is_degraded:
        assert degraded is not None
        return Health.DEGRADED, f"{state}, Degraded: {degraded.get('message') or degraded.get('reason')}"
    return Health.OK, state


def _judge_network(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DNS_CONTROLLER)
    wanted = DNS_ACTIVE if role is ClusterRole.PRIMARY else DNS_PASSIVE
    if value == wanted:
        return Health.OK, "DNS published" if role is ClusterRole.PRIMARY else "DNS ignored"
    return Health.DEGRADED, f"DNS annotation {value!r}, expected {wanted!r}"


def _judge_flux(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    suspended = bool((obj.get("spec") or {}).get("suspend"))
    if role is ClusterRole.STANDBY:
        return (Health.OK, "suspended") if suspended else (Health.DEGRADED, "reconciling on a standby")
    if suspended:
        return Health.DEGRADED, "suspended on the primary"
    ready = _condition(obj, "Ready")
    if ready is not None and ready.get("status") == "False":
        return Health.DEGRADED, f"Ready=False: {ready.get('message') or ready.get('reason')}"
    return Health.OK, "ready" if ready is not None else "reconciling"


def judge_object(kind: str, obj: Obj | None, role: ClusterRole) -> tuple[Health, str]:
    """One resource's health and a few words why, per the table in the module docstring."""
    if obj is None:
        return Health.ERROR, "not found"
    if kind in _WORKLOADS:
        return _judge_workload(obj, role)
    if kind == "CronJob":
        return _judge_cron_job(obj, role)
    if kind == VOLUME_REPLICATION:
        return _judge_volume(obj, role)
    if kind in _NETWORK:
        return _judge_network(obj, role)
    if kind in _FLUX:
        return _judge_flux(obj, role)
    return Health.UNKNOWN, f"kind {kind} is not judged"


def group_refs(group: FailoverGroup) -> list[ResourceRef]:
    """Every object the group references, in the order they are judged and shown."""
    return [*group.workload_refs(), *group.volume_refs(), *group.network_refs(), *group.flux_refs()]


def judge_group(
    cluster: str, group: FailoverGroup, objects: Mapping[ResourceRef, Obj | None], role: ClusterRole
) -> GroupHealth:
    """The group's health on ``cluster`` from its objects (``None``: not found)."""
    resources = tuple(
        ResourceHealth(ref, *judge_object(ref.kind, objects.get(ref), role)) for ref in group_refs(group)
    )
    health = worst([r.health for r in resources])
    bad = [f"{r.ref.kind}/{r.ref.name}: {r.status}" for r in resources if r.health is not Health.OK]
    return GroupHealth(cluster, role, health, resources, "; ".join(bad) or "every resource as expected")


def unreachable(cluster: str, role: ClusterRole, why: str) -> GroupHealth:
    """A cluster that did not answer: UNKNOWN, and no heartbeat is written for it."""
    return GroupHealth(cluster, role, Health.UNKNOWN, (), f"unreachable: {why}")


def next_error_since(previous: float | None, health: str, now: float) -> float | None:
    """When the active cluster started reporting ERROR: kept while ERROR (or unknown), reset otherwise."""
    if health == Health.ERROR:
        return previous if previous is not None else now
    if health == Health.UNKNOWN:
        return previous
    return None


# --- heartbeats -----------------------------------------------------------------------------------


class HeartbeatLike(Protocol):
    """What :func:`decide` reads of a heartbeat (``workers.ports.Heartbeat`` fits)."""

    @property
    def cluster(self) -> str: ...

    @property
    def health(self) -> str: ...

    @property
    def at(self) -> float: ...


@dataclass(frozen=True)
class Beat:
    cluster: str
    health: str
    at: float


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def stale_clusters(heartbeats: Sequence[HeartbeatLike], now: float, timeout: float | timedelta) -> list[str]:
    """Clusters whose last heartbeat is older than ``timeout`` at ``now``, sorted by name."""
    limit = _seconds(timeout)
    return sorted({b.cluster for b in heartbeats if now - b.at > limit})


def effective_beats(
    heartbeats: Sequence[HeartbeatLike], observations: Sequence[GroupHealth], now: float
) -> dict[str, Beat]:
    """The latest heartbeat per cluster once this pass's observations are written."""
    beats: dict[str, Beat] = {}
    for beat in heartbeats:
        if beat.cluster not in beats or beat.at > beats[beat.cluster].at:
            beats[beat.cluster] = Beat(beat.cluster, beat.health, beat.at)
    for seen in observations:
        if seen.reachable:
            beats[seen.cluster] = Beat(seen.cluster, seen.health.value, now)
    return beats


# --- the automatic failover decision ---------------------------------------------------------------


class Action(StrEnum):
    NOTHING = "nothing"  # no cluster answered: no heartbeat to write, nothing safe to decide
    HEARTBEAT = "heartbeat"  # write the heartbeats of the clusters that answered, nothing else
    FAILOVER = "failover"  # write them and create an automatic Failover


@dataclass(frozen=True)
class AutoFailover:
    """The automatic Failover to create: intent as data, picked up by the watcher like any other."""

    group: str
    namespace: str
    target_cluster: str
    mode: FailoverMode
    force: bool
    reason: str
    epoch: str = ""

    @property
    def generate_name(self) -> str:
        return f"auto-{self.group}-"

    @property
    def name(self) -> str | None:
        """One name per group and ownership epoch (the newest history record when it was decided):
        two sites' checkers deciding the same failover create the same object, and the second
        creation is refused as AlreadyExists instead of starting a second run."""
        if not self.epoch:
            return None
        digest = hashlib.sha256(f"{self.namespace}/{self.group}|{self.epoch}".encode()).hexdigest()[:10]
        return f"auto-{self.group}-{digest}"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_AUTOMATIC: "true", LABEL_GROUP: self.group}

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": GROUP_VERSION,
            "kind": "Failover",
            "metadata": {
                **({"name": self.name} if self.name else {"generateName": self.generate_name}),
                "namespace": self.namespace,
                "labels": self.labels,
            },
            "spec": {
                "targetCluster": self.target_cluster,
                "failoverMode": self.mode.value,
                "force": self.force,
                "reason": self.reason,
                "failoverGroups": [{"name": self.group, "namespace": self.namespace}],
            },
        }


@dataclass(frozen=True)
class HealthInputs:
    """Everything :func:`decide` needs about one group, read by the caller.

    ``observations``: this pass's judgement of each configured cluster (UNKNOWN when it did not answer).
    ``heartbeats``: the stored heartbeats (DynamoDB), stale ones included. ``watching_since``: when the
    checker started, so that a cluster without any heartbeat is only called down after a full
    ``timeouts.heartbeat`` of watching. ``active_error_since``: see :func:`next_error_since`.
    ``last_automatic_at``: the latest automatic failover of the group (object or history).
    ``automatic_in_flight``: name of an unfinished automatic Failover of the group, if any.
    ``lock_holder``: the run holding the group's lock, if any.
    """

    group: FailoverGroup
    now: float
    clusters: Sequence[str]
    observations: Sequence[GroupHealth]
    heartbeats: Sequence[HeartbeatLike]
    active_cluster: str | None
    watching_since: float
    active_error_since: float | None = None
    last_automatic_at: float | None = None
    automatic_in_flight: str | None = None
    lock_holder: str | None = None
    mode: FailoverMode = FailoverMode.UPTIME
    cooldown: float = 600.0
    epoch: str = ""


@dataclass(frozen=True)
class HealthDecision:
    action: Action
    reason: str
    heartbeats: tuple[GroupHealth, ...] = ()
    failover: AutoFailover | None = None
    stale: tuple[str, ...] = field(default=())


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f}s"


def _trigger(inputs: HealthInputs, beats: Mapping[str, Beat]) -> tuple[str | None, bool, str]:
    """``(why to fail over or None, whether the source is stale, why not)`` about the active cluster."""
    spec = inputs.group.spec
    active = inputs.active_cluster
    assert active is not None
    timeout = spec.timeouts.heartbeat.total_seconds()
    beat = beats.get(active)
    if beat is None:
        watched = inputs.now - inputs.watching_since
        if watched > timeout:
            return (
                f"no heartbeat from the active cluster {active} since the checker started "
                f"{_fmt(watched)} ago (timeouts.heartbeat is {_fmt(timeout)})",
                True,
                "",
            )
        return None, False, f"waiting for a first heartbeat of the active cluster {active}"
    age = inputs.now - beat.at
    if age > timeout:
        return (
            f"no heartbeat from the active cluster {active} for {_fmt(age)} "
            f"(timeouts.heartbeat is {_fmt(timeout)})",
            True,
            "",
        )
    if beat.health == Health.ERROR:
        limit = spec.timeouts.unhealthy_primary.total_seconds()
        since = inputs.active_error_since if inputs.active_error_since is not None else inputs.now
        lasted = inputs.now - since
        if lasted >= limit:
            return (
                f"the active cluster {active} has reported ERROR for {_fmt(lasted)} "
                f"(timeouts.unhealthyPrimary is {_fmt(limit)})",
                False,
                "",
            )
        return (
            None,
            False,
            (
                f"the active cluster {active} reports ERROR for {_fmt(lasted)}; automatic failover after "
                f"timeouts.unhealthyPrimary ({_fmt(limit)})"
            ),
        )
    return None, False, f"the active cluster {active} is {beat.health}, heartbeat {_fmt(age)} old"


def _choose_target(inputs: HealthInputs, beats: Mapping[str, Beat]) -> tuple[Beat | None, str]:
    """The healthiest standby: fresh heartbeat, OK before DEGRADED, then the freshest, then by name."""
    timeout = inputs.group.spec.timeouts.heartbeat.total_seconds()
    names = sorted({*inputs.clusters, *beats} - {inputs.active_cluster or ""})
    fit: list[tuple[int, float, str, Beat]] = []
    unfit: list[str] = []
    for name in names:
        beat = beats.get(name)
        if beat is None:
            unfit.append(f"{name}: no heartbeat")
        elif inputs.now - beat.at > timeout:
            unfit.append(f"{name}: heartbeat {_fmt(inputs.now - beat.at)} old")
        elif beat.health not in (Health.OK, Health.DEGRADED):
            unfit.append(f"{name}: {beat.health}")
        else:
            rank = 0 if beat.health == Health.OK else 1
            fit.append((rank, -beat.at, name, beat))
    if not fit:
        return None, "; ".join(unfit) or "no other cluster is configured"
    return min(fit)[3], ""


def decide(inputs: HealthInputs) -> HealthDecision:
    """Nothing, heartbeats only, or heartbeats and an automatic Failover; always with the reason why."""
    group = inputs.group
    name = f"{group.metadata.namespace}/{group.metadata.name}"
    to_write = tuple(seen for seen in inputs.observations if seen.reachable)
    if not to_write:
        return HealthDecision(
            Action.NOTHING, f"group {name}: no cluster answered; nothing to write or decide"
        )
    beats = effective_beats(inputs.heartbeats, inputs.observations, inputs.now)
    stale = tuple(stale_clusters(list(beats.values()), inputs.now, group.spec.timeouts.heartbeat))

    def keep(reason: str) -> HealthDecision:
        return HealthDecision(Action.HEARTBEAT, f"group {name}: {reason}", to_write, None, stale)

    if inputs.active_cluster is None:
        return keep("no active cluster recorded; automatic failover needs a first owner")
    why, source_stale, why_not = _trigger(inputs, beats)
    if why is None:
        return keep(why_not)
    if group.spec.suspended:
        suspension = f" ({group.spec.suspension_reason})" if group.spec.suspension_reason else ""
        return keep(f"{why}, but the group is suspended{suspension}: no automatic failover")
    if inputs.lock_holder is not None:
        return keep(f"{why}, but run {inputs.lock_holder} holds the group's lock: a failover is in flight")
    if inputs.automatic_in_flight is not None:
        return keep(f"{why}, but automatic Failover {inputs.automatic_in_flight} is already in flight")
    if inputs.last_automatic_at is not None and inputs.now - inputs.last_automatic_at < inputs.cooldown:
        ago = inputs.now - inputs.last_automatic_at
        return keep(
            f"{why}, but the last automatic failover was {_fmt(ago)} ago (cool-down {_fmt(inputs.cooldown)})"
        )
    target, unfit = _choose_target(inputs, beats)
    if target is None:
        return keep(f"{why}, but no standby can take over ({unfit})")
    sentence = (
        f"{AUTOMATIC_REASON_PREFIX} by the health checker: {why}; {target.cluster} is the healthiest "
        f"standby ({target.health}, heartbeat {_fmt(inputs.now - target.at)} old)"
    )
    failover = AutoFailover(
        group=group.metadata.name,
        namespace=group.metadata.namespace,
        target_cluster=target.cluster,
        mode=inputs.mode,
        force=source_stale,
        reason=sentence,
        epoch=inputs.epoch,
    )
    return HealthDecision(Action.FAILOVER, f"group {name}: {sentence}", to_write, failover, stale)


def is_automatic(reason: str, labels: Mapping[str, str] | None = None) -> bool:
    """Whether a Failover (by its labels) or a history record (by its reason) was automatic."""
    if labels is not None and labels.get(LABEL_AUTOMATIC) == "true":
        return True
    return reason.startswith(AUTOMATIC_REASON_PREFIX)


# --- standing down a site that came back ------------------------------------------------------------


def active_sign(kind: str, obj: Obj | None) -> str | None:
    """Why ``obj`` is active (serving, writing, publishing or reconciling), or None when it is not.

    A missing object is not active. Deployment/StatefulSet: replicas > 0 or any ready; CronJob: not
    suspended; VolumeReplication: primary (status or spec); Ingress/VirtualService: external-dns
    annotation ``dns-controller``; HelmRelease/Kustomization: not suspended.
    """
    if obj is None:
        return None
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind in _WORKLOADS:
        desired, ready = _int(spec.get("replicas"), 1), _int(status.get("readyReplicas"))
        return f"{desired} replicas, {ready} ready" if desired > 0 or ready > 0 else None
    if kind == "CronJob":
        return None if spec.get("suspend") else "scheduled"
    if kind == VOLUME_REPLICATION:
        state = str(status.get("state") or "").lower()
        wanted = str(spec.get("replicationState") or "").lower()
        if state == "primary":
            return "primary"
        return "replicationState primary" if wanted == "primary" else None
    if kind in _NETWORK:
        value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DNS_CONTROLLER)
        return "DNS published" if value == DNS_ACTIVE else None
    if kind in _FLUX:
        return None if spec.get("suspend") else "resumed"
    return None


def active_objects(group: FailoverGroup, objects: Mapping[ResourceRef, Obj | None]) -> tuple[str, ...]:
    """``("Deployment/web: 3 replicas, 3 ready", ...)``: the group's objects that are active."""
    found = []
    for ref in group_refs(group):
        sign = active_sign(ref.kind, objects.get(ref))
        if sign is not None:
            found.append(f"{ref.kind}/{ref.name}: {sign}")
    return tuple(found)


@dataclass(frozen=True)
class StandDownDecision:
    """Whether to make ``cluster`` passive for a group it does not own, and the sentence why (not)."""

    cluster: str
    stand_down: bool
    reason: str


def decide_stand_down(
    *,
    group: str,
    cluster: str,
    owner: str | None,
    active: Sequence[str],
    lock_holder: str | None,
) -> StandDownDecision:
    """A cluster that answers and holds active objects of ``group`` although ``owner`` owns it (a site
    that came back after a failover away from it) is stood down. Never the owner, never without an
    owner, and never while a run holds the group's lock: a failover in flight makes its target look
    active before the owner flips. ``active`` comes from :func:`active_objects`."""

    def no(why: str) -> StandDownDecision:
        return StandDownDecision(cluster, False, f"group {group}: {cluster} {why}")

    if owner is None:
        return no("is not stood down: no active cluster is recorded")
    if cluster == owner:
        return no("is the active cluster: never stood down")
    if not active:
        return no(f"is passive as expected ({owner} is the active cluster)")
    objects = "; ".join(active)
    if lock_holder is not None:
        return no(
            f"holds active objects ({objects}) but run {lock_holder} holds the group's lock: "
            "a failover may be in flight, not standing it down"
        )
    return StandDownDecision(
        cluster,
        True,
        f"group {group}: {cluster} came back holding active objects of a group owned by {owner} "
        f"({objects}): standing it down",
    )
