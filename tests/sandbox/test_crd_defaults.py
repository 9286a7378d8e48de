"""Structural-schema defaults (``default:`` in a CRD's openAPIV3Schema) applied by the sandbox API server,
through the official kubernetes client, as a real server applies them on create, update and read: this
project's CRDs (deploy/crds) as shipped, and a CRD of the test's own for the semantics (nested objects,
array items, additionalProperties, null, nullable, a default added to a CRD later)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sandbox.kube import SandboxCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "crd.hahomelabs.com", "v1alpha1"


@pytest.fixture
def cluster() -> Iterator[SandboxCluster]:
    with SandboxCluster("site-a", preinstall_crds=False, run_controllers=False) as started:
        started.store.create("namespaces", {"metadata": {"name": "shop"}})
        yield started


@pytest.fixture
def objects(cluster: SandboxCluster) -> Iterator[client.CustomObjectsApi]:
    api_client = cluster.api_client("admin")
    extensions = client.ApiextensionsV1Api(api_client)
    for path in sorted((ROOT / "deploy" / "crds").glob("*_*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            extensions.create_custom_resource_definition(crd)
    yield client.CustomObjectsApi(api_client)
    api_client.close()


def group(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FailoverGroup",
        "metadata": {"name": "payments", "namespace": "shop"},
        "spec": {"operatorID": "payments", **spec},
    }


def test_a_failover_group_created_without_suspended_reads_back_false(
    objects: client.CustomObjectsApi,
) -> None:
    created = objects.create_namespaced_custom_object(GROUP, VERSION, "shop", "failovergroups", group())
    read = objects.get_namespaced_custom_object(GROUP, VERSION, "shop", "failovergroups", "payments")
    for answer in (created, read):
        spec = answer["spec"]
        assert (spec["suspended"], spec["suspensionReason"], spec["heartbeatInterval"]) == (False, "", "30s")
        assert "timeouts" not in spec  # an absent object without a default of its own stays absent


def test_nested_defaults_in_objects_and_array_items_do_not_overwrite_given_values(
    objects: client.CustomObjectsApi,
) -> None:
    body = group(
        suspended=True,
        heartbeatInterval="10s",
        timeouts={"heartbeat": "3m"},
        fluxResources=[
            {"kind": "HelmRelease", "name": "shop"},
            {"kind": "Kustomization", "name": "apps", "triggerReconcile": True},
        ],
    )
    objects.create_namespaced_custom_object(GROUP, VERSION, "shop", "failovergroups", body)
    spec = objects.get_namespaced_custom_object(GROUP, VERSION, "shop", "failovergroups", "payments")["spec"]
    assert (spec["suspended"], spec["heartbeatInterval"]) == (True, "10s")
    assert spec["timeouts"] == {"heartbeat": "3m", "transitoryState": "5m", "unhealthyPrimary": "2m"}
    assert [r["triggerReconcile"] for r in spec["fluxResources"]] == [False, True]


def test_defaults_apply_on_update_and_patch_too(objects: client.CustomObjectsApi) -> None:
    objects.create_namespaced_custom_object(GROUP, VERSION, "shop", "failovergroups", group())
    current = objects.get_namespaced_custom_object(GROUP, VERSION, "shop", "failovergroups", "payments")
    replaced = copy.deepcopy(current)
    del replaced["spec"]["suspended"]
    replaced["spec"]["timeouts"] = {}
    after = objects.replace_namespaced_custom_object(
        GROUP, VERSION, "shop", "failovergroups", "payments", replaced
    )
    assert after["spec"]["suspended"] is False
    assert after["spec"]["timeouts"] == {"heartbeat": "1m", "transitoryState": "5m", "unhealthyPrimary": "2m"}
    assert after["metadata"]["generation"] == current["metadata"]["generation"] + 1  # timeouts is new
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, "shop", "failovergroups", "payments", {"spec": {"suspended": None}}
    )
    assert patched["spec"]["suspended"] is False  # a merge patch deletes it: defaulted again


def test_a_failover_reads_back_with_its_defaults(objects: client.CustomObjectsApi) -> None:
    failover = yaml.safe_load((ROOT / "deploy" / "examples" / "failover.yaml").read_text())
    failover["spec"].pop("force", None)
    created = objects.create_namespaced_custom_object(GROUP, VERSION, "shop", "failovers", failover)
    assert created["spec"]["force"] is False


# --- semantics, on a CRD of the test's own -------------------------------------------------------------

GADGETS: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "default": 3},
                                    "note": {"type": "string", "nullable": True, "default": "none"},
                                    # a defaulted object is defaulted inside in turn
                                    "limits": {
                                        "type": "object",
                                        "default": {},
                                        "properties": {"cpu": {"type": "string", "default": "1"}},
                                    },
                                    "ports": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "port": {"type": "integer"},
                                                "protocol": {"type": "string", "default": "TCP"},
                                            },
                                        },
                                    },
                                    "byZone": {
                                        "type": "object",
                                        "additionalProperties": {
                                            "type": "object",
                                            "properties": {"weight": {"type": "integer", "default": 1}},
                                        },
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string", "default": "Pending"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def gadgets(cluster: SandboxCluster) -> Iterator[tuple[client.CustomObjectsApi, client.ApiextensionsV1Api]]:
    api_client = cluster.api_client("admin")
    extensions = client.ApiextensionsV1Api(api_client)
    extensions.create_custom_resource_definition(GADGETS)
    yield client.CustomObjectsApi(api_client), extensions
    api_client.close()


def gadget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": spec}


def test_schema_default_semantics(gadgets: tuple[client.CustomObjectsApi, client.ApiextensionsV1Api]) -> None:
    objects, _ = gadgets
    body = gadget(
        "g1",
        size=None,  # null, not nullable: defaulted
        note=None,  # null, nullable: kept
        ports=[{"port": 80}, {"port": 53, "protocol": "UDP"}],
        byZone={"a": {}, "b": {"weight": 5}},
    )
    spec = objects.create_namespaced_custom_object("example.com", "v1", "shop", "gadgets", body)["spec"]
    assert spec == {
        "size": 3,
        "note": None,
        "limits": {"cpu": "1"},
        "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
        "byZone": {"a": {"weight": 1}, "b": {"weight": 5}},
    }
    status = objects.patch_namespaced_custom_object_status(
        "example.com", "v1", "shop", "gadgets", "g1", {"status": {}}
    )["status"]
    assert status == {"phase": "Pending"}


def test_a_default_added_to_the_crd_later_shows_when_reading_without_a_write(
    gadgets: tuple[client.CustomObjectsApi, client.ApiextensionsV1Api],
) -> None:
    objects, extensions = gadgets
    before = objects.create_namespaced_custom_object("example.com", "v1", "shop", "gadgets", gadget("g2"))
    assert "color" not in before["spec"]
    crd = extensions.read_custom_resource_definition("gadgets.example.com").to_dict()
    newer = copy.deepcopy(GADGETS)
    newer["metadata"]["resourceVersion"] = crd["metadata"]["resource_version"]
    spec_schema = newer["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["color"] = {"type": "string", "default": "blue"}
    extensions.replace_custom_resource_definition("gadgets.example.com", newer)
    after = objects.get_namespaced_custom_object("example.com", "v1", "shop", "gadgets", "g2")
    assert after["spec"]["color"] == "blue"
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
