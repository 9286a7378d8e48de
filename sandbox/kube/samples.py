"""Load the sample FailoverGroup "shop" (``sandbox/samples/shop.yaml``) into sandbox clusters.

The YAML holds the active form. :func:`sample_manifests` returns it as is, or made passive the way
the orchestrator makes a site passive (docs/API.md): workloads at 0 replicas with the count
remembered in ``failover.hahomelabs.com/replicas`` and ``kustomize.toolkit.fluxcd.io/reconcile:
disabled``, the CronJob suspended, VolumeReplications secondary, DNS annotation ``ignore``, the
HelmRelease suspended. :func:`load_sample_group` also writes the statuses the controllers would have
settled on, so a test starts from a steady site instead of waiting. This module prepares objects; it
must not change controller or server behaviour.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from sandbox.kube.cluster import SandboxCluster
from sandbox.kube.controllers import set_condition
from sandbox.kube.fleet import SandboxFleet
from sandbox.kube.store import utcnow

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
SHOP_MANIFEST = SAMPLES_DIR / "shop.yaml"

ANNOTATION_REPLICAS = "failover.hahomelabs.com/replicas"
ANNOTATION_FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"
ANNOTATION_DNS = "external-dns.alpha.kubernetes.io/controller"


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = obj["metadata"].setdefault("annotations", {})
    return annotations


def make_passive(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` in the form the orchestrator leaves on a passive site."""
    obj = copy.deepcopy(obj)
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet"):
        _annotations(obj)[ANNOTATION_REPLICAS] = str(spec.get("replicas", 1))
        _annotations(obj)[ANNOTATION_FLUX_RECONCILE] = "disabled"
        spec["replicas"] = 0
    elif kind == "CronJob" or kind in ("HelmRelease", "Kustomization"):
        spec["suspend"] = True
    elif kind in ("Ingress", "VirtualService"):
        _annotations(obj)[ANNOTATION_DNS] = "ignore"
    elif kind == "VolumeReplication":
        spec["replicationState"] = "secondary"
    return obj


def sample_manifests(active: bool = True, path: Path = SHOP_MANIFEST) -> list[dict[str, Any]]:
    """The sample group's objects (Namespace first, FailoverGroup last), active or passive."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents if active else [make_passive(d) for d in documents]


def settled_status(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The status the simulated controllers converge to for ``obj`` (None: leave it to the API)."""
    kind, spec, generation = obj["kind"], obj.get("spec") or {}, obj["metadata"].get("generation", 1)
    if kind in ("Deployment", "StatefulSet"):
        n = int(spec.get("replicas", 1))
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "replicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
            "updatedReplicas": n,
        }
        if kind == "StatefulSet":
            status.update(
                currentReplicas=n,
                currentRevision=f"{obj['metadata']['name']}-0",
                updateRevision=f"{obj['metadata']['name']}-0",
            )
            return {
                k: v
                for k, v in status.items()
                if v != 0 or k in ("replicas", "availableReplicas", "observedGeneration")
            }
        conditions: list[dict[str, Any]] = []
        set_condition(
            conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
        set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{obj["metadata"]["name"]}-0" has successfully progressed.',
        )
        status["conditions"] = conditions
        return {k: v for k, v in status.items() if v != 0}
    if kind == "VolumeReplication":
        primary = spec.get("replicationState") == "primary"
        conditions = []
        set_condition(
            conditions, "Completed", "True", "Promoted" if primary else "Demoted", "", generation=generation
        )
        set_condition(conditions, "Degraded", "False", "Healthy", "", generation=generation)
        set_condition(conditions, "Resyncing", "False", "NotResyncing", "", generation=generation)
        return {
            "state": "Primary" if primary else "Secondary",
            "observedGeneration": generation,
            "message": f"volume is marked {'primary' if primary else 'secondary'}",
            "conditions": conditions,
            "lastCompletionTime": utcnow(),
        }
    if kind in ("HelmRelease", "Kustomization"):
        conditions = []
        set_condition(
            conditions,
            "Ready",
            "True",
            "UpgradeSucceeded",
            f"Helm upgrade succeeded for release {obj['metadata']['namespace']}/{obj['metadata']['name']}.v1",
            generation=generation,
        )
        return {
            "observedGeneration": generation,
            "lastAttemptedGeneration": generation,
            "conditions": conditions,
        }
    return None


def load_sample_group(
    cluster: SandboxCluster, *, active: bool, path: Path = SHOP_MANIFEST
) -> list[dict[str, Any]]:
    """Put the sample group into ``cluster`` (active or passive), statuses settled; returns the objects."""
    stored = []
    for manifest in sample_manifests(active, path):
        obj = cluster.store.put(manifest)
        status = settled_status(obj)
        if status is not None:
            obj["status"] = status
            obj = cluster.store.put(obj)
        stored.append(obj)
    return stored


def copy_to_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A copy of a sample object moved to ``namespace`` (the Namespace itself renamed)."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "Namespace":
        obj["metadata"]["name"] = namespace
    else:
        obj["metadata"]["namespace"] = namespace
    return obj


def load_sample_copies(
    cluster: SandboxCluster, count: int, *, active: bool, prefix: str = "shop-", path: Path = SHOP_MANIFEST
) -> list[str]:
    """Put ``count`` copies of the sample group into ``cluster``, one per namespace ``<prefix>NNNN``
    (a whole site's worth of groups), statuses settled; returns the namespaces."""
    manifests = sample_manifests(active, path)
    namespaces = [f"{prefix}{index:04d}" for index in range(count)]
    for namespace in namespaces:
        for manifest in manifests:
            obj = cluster.store.put(copy_to_namespace(manifest, namespace))
            status = settled_status(obj)
            if status is not None:
                obj["status"] = status
                cluster.store.put(obj)
    return namespaces


def load_sample_fleet(fleet: SandboxFleet, active: str, path: Path = SHOP_MANIFEST) -> None:
    """Load the sample group into every cluster of ``fleet``: ``active`` active, the others passive."""
    if active not in fleet.names:
        raise KeyError(f"{active!r} is not in the fleet {fleet.names}")
    for cluster in fleet:
        load_sample_group(cluster, active=cluster.name == active, path=path)
