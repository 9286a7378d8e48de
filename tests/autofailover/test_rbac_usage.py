"""deploy/rbac grants each component exactly what it uses: an automatic failover end to end (health
checker, watcher and a real worker, each with its own ServiceAccount token, on clusters that enforce
deploy/rbac), then the verbs each identity was allowed, as the sandbox recorded them, compared with
what its ClusterRole grants. Nothing is missing (the run succeeded under enforcement) and nothing is
granted unused without a reason written here."""

from __future__ import annotations

import pytest

from sandbox.kube.identity import HEALTH_CHECKER, USERNAMES, WATCHER, WORKER
from sandbox.kube.manifests import rbac_manifests
from tests.autofailover.conftest import World
from tests.autofailover.test_auto_failover_e2e import (
    test_a_lost_site_is_failed_over_automatically_and_stood_down_when_it_returns as failover_and_back,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

Grant = tuple[str, str, str]  # verb, group, resource
KINDS = (
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("batch", "cronjobs"),
    ("networking.k8s.io", "ingresses"),
    ("networking.istio.io", "virtualservices"),
    ("helm.toolkit.fluxcd.io", "helmreleases"),
    ("kustomize.toolkit.fluxcd.io", "kustomizations"),
    ("replication.storage.openshift.io", "volumereplications"),
)
# Granted but not used by this run, each with its reason.
FLUX_KUSTOMIZATION = "the sample group names no Flux Kustomization; groups may (docs/API.md)"
ONE_OF_A_KIND = (
    "a step lists a kind only where the group names two or more of it in one namespace; the sample "
    "group names one of this kind (two StatefulSets and two VolumeReplications)"
)
TWO_OF_A_KIND = (
    "read one by one where a group names one object of the kind in a namespace, or again after a 409; "
    "the sample group names two (read by one LIST)"
)
EXTRAS: dict[str, dict[Grant, str]] = {
    WORKER: {
        ("get", "kustomize.toolkit.fluxcd.io", "kustomizations"): FLUX_KUSTOMIZATION,
        ("patch", "kustomize.toolkit.fluxcd.io", "kustomizations"): FLUX_KUSTOMIZATION,
        ("list", "kustomize.toolkit.fluxcd.io", "kustomizations"): FLUX_KUSTOMIZATION,
        **{
            ("list", group, resource): ONE_OF_A_KIND
            for group, resource in KINDS
            if resource not in ("statefulsets", "volumereplications", "kustomizations")
        },
        ("get", "crd.hahomelabs.com", "failovergroups"): "the fence is read first only on a cluster "
        "that does not enforce deploy/fencing (these do: one patch raises it)",
        ("get", "apps", "statefulsets"): TWO_OF_A_KIND,
        ("get", "replication.storage.openshift.io", "volumereplications"): TWO_OF_A_KIND,
        ("list", "batch", "jobs"): "only when a suspended CronJob's Jobs outlive the step deadline",
        ("delete", "batch", "jobs"): "only when a suspended CronJob's Jobs outlive the step deadline",
    },
    WATCHER: {
        ("get", "kustomize.toolkit.fluxcd.io", "kustomizations"): FLUX_KUSTOMIZATION,
        ("get", "crd.hahomelabs.com", "failovers"): "re-reads a Failover whose status write conflicted",
    },
    HEALTH_CHECKER: {
        ("get", "kustomize.toolkit.fluxcd.io", "kustomizations"): FLUX_KUSTOMIZATION,
    },
}
ROLES = {
    WORKER: "failover-orchestrator-worker",
    WATCHER: "failover-orchestrator-watcher",
    HEALTH_CHECKER: "failover-orchestrator-health-checker",
}


def granted(role: str) -> set[Grant]:
    [found] = [d for d in rbac_manifests() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == role]
    return {
        (verb, group, resource)
        for rule in found["rules"]
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_each_component_is_granted_exactly_what_it_uses(world: World) -> None:
    for cluster in world.fleet:
        assert cluster.authorizer.enabled, "the clusters enforce deploy/rbac"
    failover_and_back(world)
    for component, role in ROLES.items():
        used = {
            (use.verb, use.group, use.resource) for cluster in world.fleet for use in cluster.used(component)
        }
        grants = granted(role)
        assert used <= grants, (component, used - grants)  # cannot fail: the run would have got 403s
        unused = grants - used
        assert unused == set(EXTRAS[component]), (component, sorted(unused))
        assert USERNAMES[component].startswith("system:serviceaccount:failover-orchestrator:")
