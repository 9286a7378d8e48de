"""Sample objects for tests: the "shop" group of the sandbox samples, as models."""

from __future__ import annotations

import time
from typing import Any

from fsm.autofailover import AUTOMATIC_REASON_PREFIX, AutoFailover
from fsm.models import Failover, FailoverGroup, FailoverMode, ResourceRef
from workers.ports import HistoryRecord

SHOP_GROUP: dict[str, Any] = {
    "apiVersion": "crd.hahomelabs.com/v1alpha1",
    "kind": "FailoverGroup",
    "metadata": {"name": "shop", "namespace": "shop"},
    "spec": {
        "operatorID": "ops",
        "timeouts": {"transitoryState": "5m", "unhealthyPrimary": "2m", "heartbeat": "1m"},
        "heartbeatInterval": "30s",
        "workloads": [
            {"kind": "StatefulSet", "name": "db", "volumeReplications": ["db-data"]},
            {"kind": "StatefulSet", "name": "cache", "volumeReplications": ["cache-data"]},
            {"kind": "Deployment", "name": "web"},
            {"kind": "CronJob", "name": "report"},
        ],
        "networkResources": [{"kind": "VirtualService", "name": "web"}, {"kind": "Ingress", "name": "web"}],
        "fluxResources": [{"kind": "HelmRelease", "name": "shop", "triggerReconcile": True}],
    },
}


def group(**spec_overrides: Any) -> FailoverGroup:
    data = {**SHOP_GROUP, "spec": {**SHOP_GROUP["spec"], **spec_overrides}}
    return FailoverGroup.model_validate(data)


def failover(
    mode: str = "CONSISTENCY",
    target: str = "site-b",
    name: str = "move-shop",
    *,
    namespace: str = "shop",
    **spec: Any,
) -> Failover:
    """A Failover ``name`` in ``namespace`` moving the group "shop" of that namespace."""
    return Failover.model_validate(
        {
            "apiVersion": "crd.hahomelabs.com/v1alpha1",
            "kind": "Failover",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "targetCluster": target,
                "failoverMode": mode,
                "failoverGroups": [{"name": "shop"}],
                **spec,
            },
        }
    )


def all_refs(g: FailoverGroup) -> list[ResourceRef]:
    return [*g.workload_refs(), *g.volume_refs(), *g.network_refs(), *g.flux_refs()]


def automatic_failover(
    group: FailoverGroup, *, epoch: str, unhealthy_for: str = "120s", target: str = "site-b"
) -> Failover:
    """The Failover the health checker creates for ``group`` when site-a has reported ERROR for
    ``unhealthy_for`` (:class:`fsm.autofailover.AutoFailover`: its labels, name and kind of reason)."""
    reason = (
        f"{AUTOMATIC_REASON_PREFIX} by the health checker: the active cluster site-a has reported ERROR "
        f"for {unhealthy_for} (timeouts.unhealthyPrimary is {unhealthy_for}); {target} is the "
        "healthiest standby"
    )
    auto = AutoFailover(
        group=group.metadata.name,
        namespace=group.metadata.namespace,
        target_cluster=target,
        mode=FailoverMode.CONSISTENCY,
        force=False,
        reason=reason,
        epoch=epoch,
    )
    return Failover.model_validate(auto.manifest())


def history_record(**fields: Any) -> HistoryRecord:
    """A finished run of the shop group, site-a to site-b, SUCCESS a second ago; ``fields`` override."""
    now = time.time()
    defaults: dict[str, Any] = {
        "run_id": "run-1",
        "failover": "",
        "group": "shop/shop",
        "mode": "CONSISTENCY",
        "source_cluster": "site-a",
        "target_cluster": "site-b",
        "force": False,
        "reason": "",
        "started_at": now - 1,
        "finished_at": now,
        "outcome": "SUCCESS",
    }
    return HistoryRecord(**{**defaults, **fields})
