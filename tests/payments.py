"""A user's own application, "payments", as a platform team would bring it: its own namespace and
operatorID, a Deployment, a StatefulSet with its VolumeReplication, and an Ingress, on every cluster,
active on one. Nothing in DynamoDB: the group has no owner until it is adopted."""

from __future__ import annotations

import copy
from typing import Any

from fsm.models import FailoverGroup, GroupKey, ResourceRef
from sandbox.kube import SandboxFleet
from sandbox.kube.cluster import SandboxCluster
from sandbox.kube.samples import make_passive, settled_status

OPERATOR = "payments-team"
PAYMENTS = GroupKey(operator_id=OPERATOR, namespace="payments", name="payments")
DNS = "external-dns.alpha.kubernetes.io/controller"


def _workload(kind: str, name: str, replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": name, "image": f"example/{name}:1"}]},
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "payments"},
        "spec": spec,
    }


def manifests() -> list[dict[str, Any]]:
    """The ACTIVE form: Namespace first, FailoverGroup last."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}},
        _workload("Deployment", "api", 2),
        _workload("StatefulSet", "ledger", 1),
        {
            "apiVersion": "replication.storage.openshift.io/v1alpha1",
            "kind": "VolumeReplication",
            "metadata": {"name": "ledger-data", "namespace": "payments"},
            "spec": {
                "volumeReplicationClass": "rbd-volumereplicationclass",
                "replicationState": "primary",
                "dataSource": {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": "data-ledger-0"},
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "api", "namespace": "payments", "annotations": {DNS: "dns-controller"}},
            "spec": {
                "rules": [
                    {
                        "host": "payments.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "api", "port": {"number": 8080}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
        {
            "apiVersion": "crd.hahomelabs.com/v1alpha1",
            "kind": "FailoverGroup",
            "metadata": {"name": "payments", "namespace": "payments"},
            "spec": {
                "operatorID": OPERATOR,
                "workloads": [
                    {"kind": "Deployment", "name": "api"},
                    {"kind": "StatefulSet", "name": "ledger", "volumeReplications": ["ledger-data"]},
                ],
                "networkResources": [{"kind": "Ingress", "name": "api"}],
            },
        },
    ]


def group() -> FailoverGroup:
    return FailoverGroup.model_validate(manifests()[-1])


def objects(active: bool) -> dict[ResourceRef, dict[str, Any]]:
    """The group's objects as the API server would return them once settled (no server needed)."""
    found = {}
    for manifest in manifests()[1:-1]:
        obj = copy.deepcopy(manifest if active else make_passive(manifest))
        obj["metadata"]["generation"] = 1
        status = settled_status(obj)
        if status is not None:
            obj["status"] = status
        meta = obj["metadata"]
        found[ResourceRef(kind=obj["kind"], namespace=meta["namespace"], name=meta["name"])] = obj
    return found


def load(cluster: SandboxCluster, *, active: bool) -> None:
    """Put the group into ``cluster``, active or passive, with the statuses the controllers settle on."""
    for manifest in manifests():
        obj = cluster.store.put(manifest if active else make_passive(manifest))
        status = settled_status(obj)
        if status is not None:
            obj["status"] = status
            cluster.store.put(obj)


def load_fleet(fleet: SandboxFleet, active: str | None) -> None:
    """Every cluster of ``fleet``: ``active`` active (None: none), the others passive."""
    for cluster in fleet:
        load(cluster, active=cluster.name == active)
