"""kubectl against the sandbox: discovery, get, describe, scale, patch and client-side apply."""

from __future__ import annotations

import re

import pytest
import yaml

from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.kube.samples import SHOP_MANIFEST
from tests.sandbox.conftest import Kubectl
from tests.sandbox.helpers import wait_for

pytestmark = pytest.mark.integration

API_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: api:1
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
      - {name: sidecar, image: side:1}
"""

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def _ok(result: object) -> str:
    assert getattr(result, "returncode", 1) == 0, getattr(result, "stderr", "")
    return str(getattr(result, "stdout", ""))


def test_get_and_describe(fleet: SandboxFleet, kubectl: Kubectl) -> None:
    load_sample_fleet(fleet, active="site-a")
    table = _ok(kubectl("get", "deployments,statefulsets", "-n", "shop"))
    assert "deployment.apps/web" in table and "3/3" in table
    groups = _ok(kubectl("get", "failovergroups", "-A"))
    assert groups.split("\n")[0].split() == ["NAMESPACE", "NAME", "HEALTH", "SUSPENDED", "ACTIVE", "AGE"]
    volumes = _ok(kubectl("get", "vr", "-n", "shop", "--context", "site-b"))
    assert "Secondary" in volumes and "Primary" not in volumes

    web = yaml.safe_load(_ok(kubectl("get", "deployment", "web", "-n", "shop", "-o", "yaml")))
    assert web["status"]["readyReplicas"] == 3 and int(web["metadata"]["resourceVersion"]) > 0

    described = _ok(kubectl("describe", "deployment", "web", "-n", "shop"))
    assert "3 desired | 3 updated | 3 total | 3 available | 0 unavailable" in described
    _ok(kubectl("describe", "statefulset", "db", "-n", "shop"))
    _ok(kubectl("describe", "cronjob", "report", "-n", "shop"))
    described_group = _ok(kubectl("describe", "failovergroup", "shop", "-n", "shop"))
    assert re.search(r"\n  Operator ID: +failover-orchestrator\n", described_group), described_group
    missing = kubectl("get", "deployment", "nope", "-n", "shop")
    assert missing.returncode == 1 and 'deployments.apps "nope" not found' in missing.stderr


def test_scale_and_patch(fleet: SandboxFleet, kubectl: Kubectl) -> None:
    load_sample_fleet(fleet, active="site-a")
    store = fleet["site-a"].store
    _ok(kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=1"))
    _ok(kubectl("scale", "statefulset/db", "-n", "shop", "--replicas=2"))
    assert store.get("Deployment", "shop", "web")["spec"]["replicas"] == 1
    wait_for(lambda: store.get("StatefulSet", "shop", "db")["status"].get("readyReplicas") == 2)
    stale = kubectl("scale", "deployment", "web", "-n", "shop", "--replicas=3", "--resource-version=1")
    assert stale.returncode != 0 and "Expected resource version" in stale.stderr  # read from /scale

    _ok(
        kubectl(
            "patch",
            "deployment",
            "web",
            "-n",
            "shop",
            "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"web:2"}]}}}}',
        )
    )
    containers = store.get("Deployment", "shop", "web")["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "web:2" and containers[0]["env"]  # strategic: merged, not replaced

    _ok(
        kubectl(
            "patch", "helmrelease", "shop", "-n", "shop", "--type=merge", "-p", '{"spec":{"suspend":true}}'
        )
    )
    assert store.get("HelmRelease", "shop", "shop")["spec"]["suspend"] is True
    _ok(
        kubectl(
            "patch",
            "vr",
            "db-data",
            "-n",
            "shop",
            "--type=json",
            "-p",
            '[{"op":"replace","path":"/spec/replicationState","value":"secondary"}]',
        )
    )
    assert store.get("VolumeReplication", "shop", "db-data")["spec"]["replicationState"] == "secondary"
    strategic = kubectl("patch", "ingress", "web", "-n", "shop", "-p", '{"metadata":{"labels":{"a":"b"}}}')
    assert strategic.returncode == 0  # built-in kind: strategic merge patch is accepted
    refused = kubectl(
        "patch", "virtualservice", "web", "-n", "shop", "-p", '{"metadata":{"labels":{"a":"b"}}}'
    )
    assert refused.returncode != 0 and "strategic-merge-patch" in refused.stderr


def test_client_side_apply(fleet: SandboxFleet, kubectl: Kubectl) -> None:
    store = fleet["site-b"].store
    created = _ok(kubectl("apply", "-f", str(SHOP_MANIFEST), context="site-b"))
    assert "failovergroup.crd.hahomelabs.com/shop created" in created
    assert "unchanged" in _ok(kubectl("apply", "-f", str(SHOP_MANIFEST), context="site-b"))
    assert store.get("Deployment", "shop", "web")["metadata"]["annotations"][
        "kubectl.kubernetes.io/last-applied-configuration"
    ]

    assert "deployment.apps/api created" in _ok(kubectl("apply", "-f", "-", stdin=API_DEPLOYMENT))
    changed = API_DEPLOYMENT.replace("image: api:1", "image: api:2").replace(
        '{name: B, value: "2"}', '{name: C, value: "3"}'
    )
    assert "deployment.apps/api configured" in _ok(kubectl("apply", "-f", "-", stdin=changed))
    containers = fleet["site-a"].store.get("Deployment", "default", "api")["spec"]["template"]["spec"][
        "containers"
    ]
    assert containers == [
        {"name": "api", "image": "api:2", "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]},
        {"name": "sidecar", "image": "side:1"},
    ]

    _ok(kubectl("apply", "-f", "-", stdin=WIDGET_CRD))
    _ok(kubectl("apply", "-f", "-", stdin="apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\n"))
    assert "w1" in _ok(kubectl("get", "wg"))

    server_side = kubectl("apply", "--server-side", "-f", "-", stdin=API_DEPLOYMENT)
    assert server_side.returncode != 0 and "Server-side apply not available" in server_side.stderr
    _ok(kubectl("delete", "deployment", "api"))
    assert fleet["site-a"].store.find("Deployment", "default", "api") is None
