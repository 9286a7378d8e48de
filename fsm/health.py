"""Health of a FailoverGroup on each cluster, and when a site that came back is stood down.

Pure: every function here only computes. It reads no cluster, no clock, no environment and logs
nothing; the health checker (``producers.health``) reads the objects and the heartbeats, passes them in
with ``now`` and performs what the returned decision names. The decision carries a sentence saying why,
which the tests assert and the checker logs once. Whether to fail a group over automatically is decided
from these judgements by :func:`fsm.autofailover.decide_automatic_failover`.

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

The readers, the families of kinds and the annotations are those of :mod:`fsm.kinds`, the one home of
the per-kind rules; the verdicts below are the health checker's own (a standby still scaling down is
DEGRADED here, while the engine's :func:`fsm.kinds.judge` only says "not passive yet").

A site that came back
---------------------

See :func:`decide_stand_down`: a cluster that is not the group's active cluster, answers and still holds
active objects of the group (:func:`active_objects`) is stood down, unless a run holds the group's lock
(a failover in flight makes its target look active before the owner flips). Never the owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from fsm.kinds import (
    ANNOTATION_DNS_CONTROLLER,
    CRON_JOB,
    DNS_VALUE,
    FLUX,
    NETWORK,
    WORKLOADS,
    Obj,
    Role,
    active_sign,
    annotations_of,
    as_int,
    condition,
    is_true,
    section,
    suspended,
    volume_state,
)
from fsm.models import ANNOTATION_REPLICAS, VOLUME_REPLICATION, FailoverGroup, ResourceRef


class Health(StrEnum):
    OK = "OK"
    DEGRADED = "DEGRADED"
    ERROR = "ERROR"
    UNKNOWN = "UNKNOWN"


class ClusterRole(StrEnum):
    PRIMARY = "PRIMARY"
    STANDBY = "STANDBY"

    @property
    def plays(self) -> Role:
        """The role the cluster's objects should be in: active on the primary, passive on a standby."""
        return Role.ACTIVE if self is ClusterRole.PRIMARY else Role.PASSIVE


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


def _judge_workload(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    spec, status = section(obj, "spec"), section(obj, "status")
    desired = as_int(spec.get("replicas"), 1)
    ready = as_int(status.get("readyReplicas"))
    running = as_int(status.get("replicas"))
    # Unlike the engine's wait, an object without any generation counts as caught up here.
    generation = as_int(section(obj, "metadata").get("generation"))
    caught_up = as_int(status.get("observedGeneration")) >= generation
    if role is ClusterRole.STANDBY:
        if desired == 0 and running == 0 and ready == 0:
            remembered = annotations_of(obj).get(ANNOTATION_REPLICAS)
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
    paused = suspended(obj)
    active = len(section(obj, "status").get("active") or [])
    if role is ClusterRole.PRIMARY:
        return (Health.OK, "scheduled") if not paused else (Health.DEGRADED, "suspended on the primary")
    if not paused:
        return Health.DEGRADED, "scheduled on a standby, expected suspended"
    if active:
        return Health.DEGRADED, f"suspended, {active} Job(s) still running"
    return Health.OK, "suspended"


def _judge_volume(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    state = volume_state(obj) or "unknown"
    degraded = condition(obj, "Degraded")
    wanted = "primary" if role is ClusterRole.PRIMARY else "secondary"
    if state != wanted:
        if role is ClusterRole.PRIMARY:
            return Health.ERROR, f"state {state}, expected primary"
        if state == "primary":
            return Health.ERROR, "primary on a standby: two writers"
        return Health.DEGRADED, f"state {state}, expected secondary"
    if is_true(degraded):
        return Health.DEGRADED, f"{state}, Degraded: {degraded.get('message') or degraded.get('reason')}"
    return Health.OK, state


def _judge_network(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    value = annotations_of(obj).get(ANNOTATION_DNS_CONTROLLER)
    wanted = DNS_VALUE[role.plays]
    if value == wanted:
        return Health.OK, "DNS published" if role is ClusterRole.PRIMARY else "DNS ignored"
    return Health.DEGRADED, f"DNS annotation {value!r}, expected {wanted!r}"


def _judge_flux(obj: Obj, role: ClusterRole) -> tuple[Health, str]:
    paused = suspended(obj)
    if role is ClusterRole.STANDBY:
        return (Health.OK, "suspended") if paused else (Health.DEGRADED, "reconciling on a standby")
    if paused:
        return Health.DEGRADED, "suspended on the primary"
    ready = condition(obj, "Ready")
    if ready is not None and ready.get("status") == "False":
        return Health.DEGRADED, f"Ready=False: {ready.get('message') or ready.get('reason')}"
    return Health.OK, "ready" if ready is not None else "reconciling"


def judge_object(kind: str, obj: Obj | None, role: ClusterRole) -> tuple[Health, str]:
    """One resource's health and a few words why, per the table in the module docstring."""
    if obj is None:
        return Health.ERROR, "not found"
    if kind in WORKLOADS:
        return _judge_workload(obj, role)
    if kind == CRON_JOB:
        return _judge_cron_job(obj, role)
    if kind == VOLUME_REPLICATION:
        return _judge_volume(obj, role)
    if kind in NETWORK:
        return _judge_network(obj, role)
    if kind in FLUX:
        return _judge_flux(obj, role)
    return Health.UNKNOWN, f"kind {kind} is not judged"


def judge_group(
    cluster: str, group: FailoverGroup, objects: Mapping[ResourceRef, Obj | None], role: ClusterRole
) -> GroupHealth:
    """The group's health on ``cluster`` from its objects (``None``: not found)."""
    resources = tuple(
        ResourceHealth(ref, *judge_object(ref.kind, objects.get(ref), role)) for ref in group.refs()
    )
    health = worst([r.health for r in resources])
    bad = [f"{r.ref.kind}/{r.ref.name}: {r.status}" for r in resources if r.health is not Health.OK]
    return GroupHealth(cluster, role, health, resources, "; ".join(bad) or "every resource as expected")


def unreachable(cluster: str, role: ClusterRole, why: str) -> GroupHealth:
    """A cluster that did not answer: UNKNOWN, and no heartbeat is written for it."""
    return GroupHealth(cluster, role, Health.UNKNOWN, (), f"unreachable: {why}")


# --- heartbeats -----------------------------------------------------------------------------------


class HeartbeatLike(Protocol):
    """What :func:`stale_clusters` and :func:`fsm.autofailover.decide_automatic_failover` read of a
    heartbeat (``workers.ports.Heartbeat`` fits)."""

    @property
    def cluster(self) -> str: ...

    @property
    def health(self) -> str: ...

    @property
    def at(self) -> float: ...


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def stale_clusters(heartbeats: Sequence[HeartbeatLike], now: float, timeout: float | timedelta) -> list[str]:
    """Clusters whose last heartbeat is older than ``timeout`` at ``now``, sorted by name."""
    limit = _seconds(timeout)
    return sorted({b.cluster for b in heartbeats if now - b.at > limit})


# --- standing down a site that came back ------------------------------------------------------------


def active_objects(group: FailoverGroup, objects: Mapping[ResourceRef, Obj | None]) -> tuple[str, ...]:
    """``("Deployment/web: 3 replicas, 3 ready", ...)``: the group's objects that are active."""
    found = []
    for ref in group.refs():
        sign = active_sign(ref.kind, objects.get(ref))
        if sign is not None:
            found.append(f"{ref.kind}/{ref.name}: {sign}")
    return tuple(found)


@dataclass(frozen=True)
class StandDownDecision:
    """Whether to make ``cluster`` passive for a group it does not own, and the sentence why (not).

    ``diverged``: the clusters contradict DynamoDB in a way no automatic action may settle (the owner
    answers but does not serve while ``cluster`` is active): record the group as diverged.
    """

    cluster: str
    stand_down: bool
    reason: str
    diverged: bool = False


def decide_stand_down(
    *,
    group: str,
    cluster: str,
    owner: str | None,
    active: Sequence[str],
    lock_holder: str | None,
    owner_health: GroupHealth | None = None,
    diverged: str | None = None,
) -> StandDownDecision:
    """A cluster that answers and holds active objects of ``group`` although ``owner`` owns it (a site
    that came back after a failover away from it) is stood down. Never the owner, never without an
    owner, never while a run holds the group's lock (a failover in flight makes its target look
    active before the owner flips), never while the group is diverged, and never unless the owner is
    verified to serve: ``owner_health`` (the owner judged as PRIMARY this pass) must be OK, every
    workload ready, volumes primary, DNS on. Otherwise standing ``cluster`` down could leave the group
    with no serving site at all: when the owner answered but does not serve, the group is diverged;
    when it did not answer, nothing is decided. ``active`` comes from :func:`active_objects`."""

    def no(why: str, *, diverge: bool = False) -> StandDownDecision:
        return StandDownDecision(cluster, False, f"group {group}: {cluster} {why}", diverge)

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
    if diverged is not None:
        return no(
            f"holds active objects ({objects}) but the group is diverged ({diverged}): no automatic "
            "stand-down until `failoverctl group resolve` settles it"
        )
    if owner_health is None or not owner_health.reachable:
        return no(
            f"holds active objects ({objects}) but the owner {owner} could not be read: not standing "
            "down what may be the only serving site"
        )
    if owner_health.health is not Health.OK:
        return no(
            f"holds active objects ({objects}) but the owner {owner} does not serve "
            f"({owner_health.health.value}: {owner_health.detail}): not standing down what may be the "
            "only serving site; the group is diverged",
            diverge=True,
        )
    return StandDownDecision(
        cluster,
        True,
        f"group {group}: {cluster} came back holding active objects of a group owned by {owner} "
        f"({objects}), and {owner} serves: standing it down",
    )
