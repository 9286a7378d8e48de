"""The sample FailoverGroup "shop": active and passive forms, and their fit with the product's model."""

from __future__ import annotations

import time

import pytest

from fsm.models import FailoverGroup
from sandbox.kube import SandboxFleet, load_sample_fleet, sample_manifests

pytestmark = pytest.mark.integration

DNS = "external-dns.alpha.kubernetes.io/controller"
REPLICAS = "failover.hahomelabs.com/replicas"
FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"


def _annotations(obj: dict[str, object]) -> dict[str, str]:
    return dict((obj["metadata"] or {}).get("annotations") or {})  # type: ignore[union-attr]


def test_active_and_passive_sites(fleet: SandboxFleet) -> None:
    load_sample_fleet(fleet, active="site-a")
    active, passive = fleet["site-a"].store, fleet["site-b"].store

    for name, replicas in (("db", 1), ("cache", 2)):
        up = active.get("StatefulSet", "shop", name)
        assert up["spec"]["replicas"] == replicas and up["status"]["readyReplicas"] == replicas
        assert REPLICAS not in _annotations(up)
        down = passive.get("StatefulSet", "shop", name)
        assert down["spec"]["replicas"] == 0 and down["status"]["replicas"] == 0
        assert _annotations(down)[REPLICAS] == str(replicas)
        assert _annotations(down)[FLUX_RECONCILE] == "disabled"
    web = passive.get("Deployment", "shop", "web")
    assert (web["spec"]["replicas"], _annotations(web)[REPLICAS]) == (0, "3")
    assert active.get("Deployment", "shop", "web")["status"]["availableReplicas"] == 3

    for volume in ("db-data", "cache-data"):
        primary, secondary = (
            active.get("VolumeReplication", "shop", volume),
            passive.get("VolumeReplication", "shop", volume),
        )
        assert (primary["spec"]["replicationState"], primary["status"]["state"]) == ("primary", "Primary")
        assert (secondary["spec"]["replicationState"], secondary["status"]["state"]) == (
            "secondary",
            "Secondary",
        )

    for kind in ("VirtualService", "Ingress"):
        assert _annotations(active.get(kind, "shop", "web"))[DNS] == "dns-controller"
        assert _annotations(passive.get(kind, "shop", "web"))[DNS] == "ignore"

    assert active.get("HelmRelease", "shop", "shop")["spec"]["suspend"] is False
    assert passive.get("HelmRelease", "shop", "shop")["spec"]["suspend"] is True
    ready = active.get("HelmRelease", "shop", "shop")["status"]["conditions"]
    assert [(c["type"], c["status"]) for c in ready] == [("Ready", "True")]
    assert active.get("CronJob", "shop", "report")["spec"]["suspend"] is False
    assert passive.get("CronJob", "shop", "report")["spec"]["suspend"] is True


def test_the_group_parses_and_references_only_existing_objects(fleet: SandboxFleet) -> None:
    load_sample_fleet(fleet, active="site-b")
    for cluster in fleet:
        group = FailoverGroup.model_validate(cluster.store.get("FailoverGroup", "shop", "shop"))
        refs = [*group.workload_refs(), *group.volume_refs(), *group.network_refs(), *group.flux_refs()]
        assert len(refs) == 9
        for ref in refs:
            assert cluster.store.find(ref.kind, ref.namespace, ref.name) is not None, str(ref)


def test_loaded_sites_are_already_steady(fleet: SandboxFleet) -> None:
    load_sample_fleet(fleet, active="site-a")
    versions = [cluster.store.resource_version for cluster in fleet]
    time.sleep(0.3)  # several controller ticks and every configured delay
    assert [cluster.store.resource_version for cluster in fleet] == versions


def test_manifests_in_both_forms(fleet: SandboxFleet) -> None:
    active, passive = sample_manifests(active=True), sample_manifests(active=False)
    assert [m["kind"] for m in active] == [m["kind"] for m in passive]
    assert active[0]["kind"] == "Namespace" and active[-1]["kind"] == "FailoverGroup"
    assert sum(m["kind"] == "VolumeReplication" for m in active) == 2
    with pytest.raises(KeyError):
        load_sample_fleet(fleet, active="nowhere")
