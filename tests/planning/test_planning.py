"""Dry runs against two sandbox clusters: previews equal what the effects then do, nothing is written,
skipped steps say why, and validation names missing objects and clusters that do not answer."""

from __future__ import annotations

from typing import Any

import pytest

from fsm.models import FailoverGroup, ResourceRef
from fsm.plan import CATALOGUE, Step, StepType
from sandbox.kube import SandboxFleet, sample_manifests
from tests.planning.conftest import CLUSTERS, failover_of, sample_group
from workers.api import Orchestrator, RequestError
from workers.kube import KubeEffects
from workers.planning import PlanReport, plan_failover, validate_group
from workers.ports import Role
from workers.steps import STEPS

DNS_OFF = "annotations ~external-dns.alpha.kubernetes.io/controller=dns-controller -> ignore"


def ref(kind: str, name: str) -> ResourceRef:
    return ResourceRef(kind=kind, namespace="shop", name=name)


def versions(fleet: SandboxFleet) -> dict[tuple[str, str, str], str]:
    """Every referenced object's resourceVersion on every cluster."""
    group = sample_group()
    refs = [*group.workload_refs(), *group.volume_refs(), *group.network_refs(), *group.flux_refs()]
    return {
        (cluster, r.kind, r.name): fleet[cluster].store.get(r.kind, r.namespace, r.name)["metadata"][
            "resourceVersion"
        ]
        for cluster in CLUSTERS
        for r in refs
    }


def changes_of(report: PlanReport, cluster: str) -> dict[str, str]:
    return {str(c.ref): c.detail for _, c in report.by_cluster()[cluster] if c.changed}


def test_every_effect_and_wait_step_is_covered() -> None:
    """The dry run previews from the same catalogue entries the steps run from: every effect and
    every object wait names its objects and role there (the volume-release wait reads DynamoDB)."""
    for step, info in CATALOGUE.items():
        assert step in STEPS
        if info.type is StepType.EFFECT or (
            info.type is StepType.WAIT and step is not Step.WAIT_VOLUMES_RELEASED
        ):
            assert info.objects and info.role is not None, step


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_plan_lists_every_change_per_cluster_and_writes_nothing(
    fleet: SandboxFleet, effects: KubeEffects, mode: str
) -> None:
    before = versions(fleet)

    report = plan_failover(failover_of(mode), sample_group(), source_cluster="site-a", effects=effects)

    assert versions(fleet) == before
    assert report.problems == [] and report.skipped == []
    source, target = changes_of(report, "site-a"), changes_of(report, "site-b")
    assert source == {
        "VirtualService shop/web": DNS_OFF,
        "Ingress shop/web": DNS_OFF,
        "StatefulSet shop/db": "spec.replicas 1 -> 0; annotations +failover.hahomelabs.com/replicas=1, "
        "+kustomize.toolkit.fluxcd.io/reconcile=disabled",
        "StatefulSet shop/cache": "spec.replicas 2 -> 0; annotations +failover.hahomelabs.com/replicas=2, "
        "+kustomize.toolkit.fluxcd.io/reconcile=disabled",
        "Deployment shop/web": "spec.replicas 3 -> 0; annotations +failover.hahomelabs.com/replicas=3, "
        "+kustomize.toolkit.fluxcd.io/reconcile=disabled",
        "CronJob shop/report": "spec.suspend false -> true",
        "HelmRelease shop/shop": "spec.suspend false -> true",
        "VolumeReplication shop/db-data": "spec.replicationState primary -> secondary",
        "VolumeReplication shop/cache-data": "spec.replicationState primary -> secondary",
    }
    assert target["Deployment shop/web"] == (
        "spec.replicas 0 -> 3; annotations -kustomize.toolkit.fluxcd.io/reconcile"
    )
    assert target["VolumeReplication shop/db-data"] == "spec.replicationState secondary -> primary"
    assert target["Ingress shop/web"].endswith("=ignore -> dns-controller")
    assert len(target) == len(source) == 9
    # The steps come in build_plan order, each on its side's cluster.
    order = [s.step for s in report.steps]
    assert order.index(Step.SCALE_DOWN_WORKLOADS) < order.index(Step.SCALE_UP_WORKLOADS) or mode == "UPTIME"
    assert all(s.cluster == "site-a" for s in report.steps if s.step is Step.DEMOTE_VOLUMES)
    wait = next(s for s in report.steps if s.step is Step.WAIT_SCALED_DOWN)
    assert "Deployment shop/web passive" in wait.checks and wait.changes == ()


def test_preview_says_what_the_effect_then_does(fleet: SandboxFleet, effects: KubeEffects) -> None:
    cases = [
        ("site-a", ref("Deployment", "web"), Role.PASSIVE),
        ("site-a", ref("Ingress", "web"), Role.PASSIVE),
        ("site-b", ref("VolumeReplication", "db-data"), Role.ACTIVE),
        ("site-b", ref("StatefulSet", "cache"), Role.ACTIVE),
    ]
    for cluster, r, role in cases:
        preview = effects.preview(cluster, r, role)
        assert preview.changed
        made = (
            effects.make_passive(cluster, r, epoch=7)
            if role is Role.PASSIVE
            else effects.make_active(cluster, r, epoch=7)
        )
        assert (made.changed, made.action) == (True, preview.action)
        after = effects.preview(cluster, r, role)
        assert (after.changed, after.detail) == (False, f"already {role.value}")
    web = fleet["site-a"].store.get("Deployment", "shop", "web")
    assert web["spec"]["replicas"] == 0
    assert web["metadata"]["annotations"] == {
        "failover.hahomelabs.com/replicas": "3",
        "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
        "failover.hahomelabs.com/epoch": "7",
    }
    cache = fleet["site-b"].store.get("StatefulSet", "shop", "cache")
    assert cache["spec"]["replicas"] == 2
    assert "kustomize.toolkit.fluxcd.io/reconcile" not in cache["metadata"]["annotations"]


def test_resume_flux_previews_the_reconcile_request(effects: KubeEffects) -> None:
    report = plan_failover(failover_of(), sample_group(), source_cluster="site-a", effects=effects)
    [resume] = [s for s in report.steps if s.step is Step.RESUME_FLUX]
    [change] = resume.changes
    assert change.cluster == "site-b" and change.detail.startswith("spec.suspend true -> false")
    reconciles = any(f.trigger_reconcile for f in sample_group().spec.flux_resources)
    assert ("reconcile.fluxcd.io/requestedAt=<time of the run>" in change.detail) == reconciles


def without_network() -> FailoverGroup:
    [raw] = [d for d in sample_manifests() if d["kind"] == "FailoverGroup"]
    raw["spec"].pop("networkResources", None)
    return FailoverGroup.model_validate(raw)


def test_steps_without_resources_are_skipped_with_the_reason(effects: KubeEffects) -> None:
    report = plan_failover(failover_of("UPTIME"), without_network(), source_cluster="site-a", effects=effects)

    skipped = {s.step: s.skip_reason for s in report.skipped}
    assert skipped == {
        Step.ENABLE_NETWORK: "the group has no Ingresses or VirtualServices",
        Step.DISABLE_NETWORK: "the group has no Ingresses or VirtualServices",
    }
    assert not any(s.changes for s in report.skipped)
    assert "Ingress shop/web" not in changes_of(report, "site-a")
    assert "2 step(s) skipped" in report.summary()


def test_validate_names_a_missing_object_and_an_unreachable_cluster(
    fleet: SandboxFleet, effects: KubeEffects
) -> None:
    group = sample_group()
    assert validate_group(group, CLUSTERS, effects) == []

    fleet["site-b"].store.delete("HelmRelease", "shop", "shop")
    fleet["site-a"].set_down(True)
    problems = validate_group(group, CLUSTERS, effects)

    assert [str(p) for p in problems if p.cluster == "site-b"] == [
        "HelmRelease shop/shop on cluster site-b: not found"
    ]
    [down] = [p for p in problems if p.cluster == "site-a"]
    assert down.ref is None and str(down).startswith("cluster site-a: did not answer")


def test_plan_records_problems_instead_of_failing(fleet: SandboxFleet, effects: KubeEffects) -> None:
    fleet["site-b"].store.delete("Deployment", "shop", "web")
    fleet["site-a"].set_down(True)

    report = plan_failover(failover_of(), sample_group(), source_cluster="site-a", effects=effects)

    messages = [str(p) for p in report.problems]
    assert "Deployment shop/web on cluster site-b: not found" in messages
    assert any(m.startswith("cluster site-a: did not answer") for m in messages)
    assert report.by_cluster()["site-a"] == []


def test_orchestrator_plans_from_the_active_cluster_and_validates(
    orchestrator: Orchestrator, fleet: SandboxFleet
) -> None:
    before = versions(fleet)
    report = orchestrator.plan(failover_of(), sample_group())
    assert (report.source_cluster, report.target_cluster) == ("site-a", "site-b")
    assert len([c for c in report.changes if c.changed]) == 18
    assert orchestrator.validate(sample_group(), CLUSTERS) == []
    assert versions(fleet) == before
    with pytest.raises(RequestError) as raised:
        orchestrator.plan(failover_of(target="site-a"), sample_group())
    assert raised.value.field == "spec.targetCluster"


def test_report_serialises_to_json_types(effects: KubeEffects) -> None:
    import json

    report = plan_failover(failover_of(), sample_group(), source_cluster="site-a", effects=effects)
    data: dict[str, Any] = json.loads(json.dumps(report.to_dict()))
    assert data["sourceCluster"] == "site-a" and data["steps"][0]["step"] == "validate"
    [entry] = [e for e in report.status_plan() if e["cluster"] == "site-b"]
    assert {
        "step": "promote_volumes",
        "object": "VolumeReplication shop/db-data",
        "change": "spec.replicationState secondary -> primary",
    } in entry["changes"]
