"""When to fail a FailoverGroup over automatically: the health checker's decision, as data.

Pure: every function here only computes. It reads no cluster, no clock, no environment and logs
nothing; the health checker (``producers.health``) passes in this pass's judgement of each cluster
(:mod:`fsm.health`), the stored heartbeats and ``now``, and performs what the returned decision names
(write heartbeats, create a ``Failover`` object). The decision carries a sentence saying why, which the
tests assert and the checker logs once.

See :func:`decide_automatic_failover`. In short: only when the active cluster's heartbeat is older than
``timeouts.heartbeat`` (the Failover then carries ``force: true``) or it has reported ERROR for
``timeouts.unhealthyPrimary``; never while the group is ``suspended`` or diverged, while any run holds
the group's lock, while an automatic Failover of the group is in flight, or within the cool-down after
the last automatic one; and only to a standby with a fresh heartbeat, OK before DEGRADED.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fsm.health import GroupHealth, Health, HeartbeatLike, stale_clusters
from fsm.models import GROUP_VERSION, LABEL_GROUP, FailoverGroup, FailoverMode

LABEL_AUTOMATIC = "failover.hahomelabs.com/automatic"
AUTOMATIC_REASON_PREFIX = "automatic failover"


def next_error_since(previous: float | None, health: str, now: float) -> float | None:
    """When the active cluster started reporting ERROR: kept while ERROR (or unknown), reset otherwise."""
    if health == Health.ERROR:
        return previous if previous is not None else now
    if health == Health.UNKNOWN:
        return previous
    return None


# --- heartbeats -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Beat:
    cluster: str
    health: str
    at: float


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
    """Everything :func:`decide_automatic_failover` needs about one group, read by the caller.

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
    diverged: str | None = None
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


def decide_automatic_failover(inputs: HealthInputs) -> HealthDecision:
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
        return keep(
            "no active cluster recorded; automatic failover needs a first owner: "
            f"`failoverctl group adopt {group.metadata.namespace}/{group.metadata.name}`"
        )
    why, source_stale, why_not = _trigger(inputs, beats)
    if why is None:
        return keep(why_not)
    if inputs.diverged is not None:
        return keep(
            f"{why}, but the group is diverged ({inputs.diverged}): no automatic failover until "
            "`failoverctl group resolve` settles it"
        )
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
