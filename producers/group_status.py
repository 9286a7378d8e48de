"""The ``status`` of every FailoverGroup, kept current by the watcher between its watch windows.

``globalState`` comes from DynamoDB (active cluster, heartbeats, the last failover); ``health`` is
judged from the real objects the way the health checker judges them. A status is written only when
something other than ``lastSyncTime`` changed, so an idle fleet costs reads, not writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from pydantic import ValidationError

from fsm.forecast import HISTORY_DEPTH, group_forecast
from fsm.health import ClusterRole, GroupHealth, Health, stale_clusters, unreachable
from fsm.models import FailoverGroup
from fsm.run import resolve_command
from producers.adoption import Adoption, adopt_when_clear, adopted_condition
from producers.decisions import REASON_INVALID, conditions, describe, first_error, iso, needs_write
from producers.health import observe_group
from producers.kube import FAILOVER_GROUPS, ClusterClient, Obj
from workers.api import Orchestrator, set_predicted_rto
from workers.errors import OrchestratorError, TemporaryError
from workers.ports import Divergence, Heartbeat, HistoryRecord

log = structlog.get_logger(__name__)

# (cluster, object, what, reason): logs a reason once per object, as the watcher does.
LogOnce = Callable[[str, Obj, str, str], None]


class GroupStatusWriter:
    """Writes the status of the FailoverGroups on each of ``clusters`` (those of ``operator_id``)."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        clusters: Mapping[str, ClusterClient],
        *,
        operator_id: str | None,
        log_once: LogOnce,
    ) -> None:
        self.orchestrator = orchestrator
        self.clusters = clusters
        self.operator_id = operator_id
        self._log_once = log_once

    def sync(self, cluster: str, now: float) -> int:
        """Bring the status of every FailoverGroup on ``cluster`` up to date; returns how many changed."""
        client = self.clusters[cluster]
        items, _ = client.list(FAILOVER_GROUPS)
        written = 0
        for obj in items:
            try:
                written += self._sync_one(cluster, client, obj, now)
            except TemporaryError:
                raise  # the cluster stopped answering: the watcher's loop backs off
            except Exception as error:  # one broken group never stops the others' statuses
                self._log_once(cluster, obj, "group_status_failed", f"{describe(obj)}: {error!r}"[:400])
        return written

    def sync_group(self, cluster: str, namespace: str, name: str, now: float) -> int:
        """Bring one FailoverGroup's status on ``cluster`` up to date (0 when unchanged or absent)."""
        client = self.clusters[cluster]
        obj = client.find(FAILOVER_GROUPS, namespace, name)
        return 0 if obj is None else self._sync_one(cluster, client, obj, now)

    def _sync_one(self, cluster: str, client: ClusterClient, obj: Obj, now: float) -> int:
        group = self._parse(cluster, obj)
        if group is None:
            return self._mark_invalid(client, obj, now)
        status = self.status(cluster, group, obj, now)
        if not _changed(obj, status):
            return 0
        client.patch_status(FAILOVER_GROUPS, group.metadata.namespace, group.metadata.name, status)
        return 1

    def _mark_invalid(self, client: ClusterClient, obj: Obj, now: float) -> int:
        """An invalid FailoverGroup of ours gets health ERROR and a condition naming the field."""
        meta, spec = obj.get("metadata") or {}, obj.get("spec")
        operator = spec.get("operatorID") if isinstance(spec, Mapping) else None
        if self.operator_id is not None and isinstance(operator, str) and operator != self.operator_id:
            return 0  # another orchestrator's group: its own watcher says what is wrong with it
        invalid = _invalid_reason(obj)
        if invalid is None or not meta.get("name"):
            return 0
        text = f"invalid: {invalid}"
        wanted = [("Valid", False, REASON_INVALID, text)]
        status = {"health": "ERROR", "conditions": conditions(obj, wanted, meta.get("generation"), now)}
        if not needs_write(obj, status):
            return 0
        namespace, name = str(meta.get("namespace") or "default"), str(meta["name"])
        client.patch_status(FAILOVER_GROUPS, namespace, name, status)
        return 1

    def _parse(self, cluster: str, obj: Obj) -> FailoverGroup | None:
        """The group if it is valid and ours; an invalid one is logged once (and marked invalid)."""
        try:
            group = FailoverGroup.model_validate(obj)
        except ValidationError as error:
            bad, message = first_error(error)
            self._log_once(cluster, obj, "invalid_group", f"FailoverGroup {describe(obj)}: {bad}: {message}")
            return None
        if self.operator_id is not None and group.spec.operator_id != self.operator_id:
            return None
        return group

    def status(self, cluster: str, group: FailoverGroup, obj: Obj, now: float) -> dict[str, Any]:
        """The FailoverGroup's status on ``cluster``: global state from DynamoDB, health from objects."""
        coordination = self.orchestrator.coordination
        previous = dict((obj.get("status") or {}).get("globalState") or {})
        try:
            active = coordination.active_cluster(group.key)
            heartbeats = coordination.heartbeats(group.key)
            history = coordination.history(group.key, limit=HISTORY_DEPTH)
            divergence = coordination.divergence(group.key)
        except OrchestratorError as error:
            log.warning(
                "group_state_unavailable", cluster=cluster, group=str(group.key), error=error.describe()
            )
            previous.update(dbSyncStatus="Error", thisCluster=cluster)
            return {"suspended": group.spec.suspended, "globalState": previous}
        adoption = self._adopt(cluster, group, obj) if active is None else None
        if adoption is not None:
            active = adoption.owner
        role = ClusterRole.PRIMARY if cluster == active else ClusterRole.STANDBY
        health: GroupHealth = (
            observe_group(self.clusters[cluster], group, role)
            if active is not None
            else unreachable(cluster, role, "no active cluster recorded")
        )
        status: dict[str, Any] = {
            "health": health.health.value,
            "suspended": group.spec.suspended,
            **resource_statuses(group, health),
            "globalState": {
                "activeCluster": active,
                "thisCluster": cluster,
                "lastFailover": last_failover(history),
                "dbSyncStatus": "Synced",
                "lastSyncTime": iso(now),
                "clusters": cluster_states(
                    sorted({*self.clusters, *(b.cluster for b in heartbeats)}),
                    active,
                    heartbeats,
                    now,
                    group.spec.timeouts.heartbeat.total_seconds(),
                ),
            },
        }
        wanted = [action_required(group, divergence), adopted_condition(active, adoption)]
        status["conditions"] = conditions(obj, wanted, (obj.get("metadata") or {}).get("generation"), now)
        predicted = group_forecast(group, history)
        set_predicted_rto(predicted, str(group.key))
        status["forecast"] = predicted.to_dict()
        finished = [r for r in history if r.outcome == "SUCCESS"]
        if finished:
            status["lastFailoverTime"] = iso(finished[0].finished_at)
        return status

    def _adopt(self, cluster: str, group: FailoverGroup, obj: Obj) -> Adoption | None:
        """A group without owner is adopted on its one active cluster when every cluster says so
        (``producers.adoption``); otherwise the ``Adopted=False`` condition says why and what to run."""
        try:
            adoption = adopt_when_clear(
                self.orchestrator,
                self.clusters,
                group,
                actor="watcher",
                reason="adopted by the watcher: exactly one cluster active, every other passive",
            )
        except OrchestratorError as error:
            log.warning(
                "group_adoption_failed", cluster=cluster, group=str(group.key), error=error.describe()
            )
            return None
        if adoption.recorded:
            log.warning("group_adopted", group=str(group.key), owner=adoption.owner, actor="watcher")
        elif adoption.owner is None and adoption.decision is not None:
            why = f"{adoption.decision.message}{f' ({adoption.blocked})' if adoption.blocked else ''}"
            self._log_once(cluster, obj, "group_not_adopted", why)
        return adoption


def action_required(group: FailoverGroup, divergence: Divergence | None) -> tuple[str, bool, str, str]:
    """The ``OperatorActionRequired`` condition: True while the group is diverged, with what was seen
    active where and the exact command that settles it."""
    message = ""
    if divergence is not None:
        seen = f"; seen: {divergence.detail}" if divergence.detail else ""
        message = f"{divergence.reason}{seen}; settle it with `{resolve_command(group.key)}`"
    reason = "Diverged" if divergence is not None else "Consistent"
    return ("OperatorActionRequired", divergence is not None, reason, message)


def _invalid_reason(obj: Obj) -> str | None:
    """``field: message`` of an invalid FailoverGroup (None when it is valid)."""
    try:
        FailoverGroup.model_validate(obj)
    except ValidationError as error:
        bad, message = first_error(error)
        return f"{bad}: {message}"
    return None


def _changed(obj: Obj, status: Mapping[str, Any]) -> bool:
    """Whether ``status`` differs from the object's: lastSyncTime alone is no change, and a None
    (merge patch: remove) equals a missing key."""
    current = _without_none((obj.get("status") or {}).get("globalState") or {})
    wanted = _without_none(status["globalState"])
    current.pop("lastSyncTime", None)
    wanted.pop("lastSyncTime", None)
    return needs_write(obj, status, ignore=("globalState",)) or current != wanted


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def resource_statuses(group: FailoverGroup, health: GroupHealth) -> dict[str, list[dict[str, Any]]]:
    """Per-resource ``health`` and ``status`` of ``workloads[]``, ``networkResources[]`` and so on."""
    judged = {(r.ref.kind, r.ref.name): r for r in health.resources}

    def entry(kind: str, name: str) -> dict[str, Any]:
        found = judged.get((kind, name))
        if found is None:
            return {"kind": kind, "name": name, "health": Health.UNKNOWN.value, "status": health.detail}
        return {"kind": kind, "name": name, "health": found.health.value, "status": found.status}

    workloads = []
    for workload in group.spec.workloads:
        item = entry(workload.kind.value, workload.name)
        volumes = [entry("VolumeReplication", v) for v in workload.volume_replications]
        if volumes:
            item["volumeReplications"] = [{k: v for k, v in vol.items() if k != "kind"} for vol in volumes]
        workloads.append(item)
    return {
        "workloads": workloads,
        "networkResources": [entry(n.kind.value, n.name) for n in group.spec.network_resources],
        "fluxResources": [entry(f.kind.value, f.name) for f in group.spec.flux_resources],
    }


def last_failover(history: Sequence[HistoryRecord]) -> dict[str, Any] | None:
    if not history:
        return None
    record = history[0]
    return {
        "runId": record.run_id,
        "failover": record.failover,
        "sourceCluster": record.source_cluster,
        "targetCluster": record.target_cluster,
        "outcome": record.outcome,
        "time": iso(record.finished_at),
    }


def cluster_states(
    names: Sequence[str], active: str | None, heartbeats: Sequence[Heartbeat], now: float, timeout: float
) -> list[dict[str, Any]]:
    """``globalState.clusters[]``: role from DynamoDB, health from the heartbeat (UNKNOWN when stale)."""
    beats = {b.cluster: b for b in heartbeats}
    stale = set(stale_clusters(heartbeats, now, timeout))
    out = []
    for name in names:
        beat = beats.get(name)
        item: dict[str, Any] = {
            "name": name,
            "role": (ClusterRole.PRIMARY if name == active else ClusterRole.STANDBY).value,
            "health": Health.UNKNOWN.value if beat is None or name in stale else beat.health,
        }
        if beat is not None:
            item["lastHeartbeat"] = iso(beat.at)
        out.append(item)
    return out
