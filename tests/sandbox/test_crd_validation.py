"""CRD validation rules (``x-kubernetes-validations``) enforced by the sandbox API server, through the
official kubernetes client: this project's CRDs (deploy/crds) as shipped, and a test CRD for the rule
semantics (levels, transition rules, messageExpression, fieldPath, reason, ratcheting)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster
from tests.sandbox.helpers import status_body

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "crd.hahomelabs.com", "v1alpha1"
IMMUTABLE = 'Invalid value: "object": spec is immutable: create a new Failover'


@pytest.fixture
def cluster() -> Iterator[SandboxCluster]:
    """A cluster with the project's own CRDs, applied as shipped (not the compact pre-installed ones)."""
    with SandboxCluster("site-a", preinstall_crds=False, run_controllers=False) as started:
        started.store.create("namespaces", {"metadata": {"name": "shop"}})
        yield started


@pytest.fixture
def api(cluster: SandboxCluster) -> Iterator[ApiClient]:
    api_client = cluster.api_client("admin")
    extensions = client.ApiextensionsV1Api(api_client)
    for path in sorted((ROOT / "deploy" / "crds").glob("*_*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            extensions.create_custom_resource_definition(crd)
    yield api_client
    api_client.close()


def failover() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "examples" / "failover.yaml").read_text())


def refused(call: Any, *args: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as exc:
        call(*args)
    body = status_body(exc.value)
    assert (exc.value.status, body["reason"]) == (422, "Invalid"), body
    return body


def test_a_failover_is_accepted_on_create_and_its_spec_is_immutable(api: ApiClient) -> None:
    objects = client.CustomObjectsApi(api)
    name = "move-shop-to-site-b"
    objects.create_namespaced_custom_object(GROUP, VERSION, "shop", "failovers", failover())

    patch = {"spec": {"targetCluster": "site-c"}}
    body = refused(objects.patch_namespaced_custom_object, GROUP, VERSION, "shop", "failovers", name, patch)
    assert body["message"] == f'Failover.{GROUP} "{name}" is invalid: spec: {IMMUTABLE}'
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": IMMUTABLE, "field": "spec"}
    ]
    assert body["details"]["kind"] == "Failover" and body["details"]["group"] == GROUP

    current = objects.get_namespaced_custom_object(GROUP, VERSION, "shop", "failovers", name)
    replaced = copy.deepcopy(current)
    replaced["spec"]["failoverMode"] = "UPTIME"
    refused(objects.replace_namespaced_custom_object, GROUP, VERSION, "shop", "failovers", name, replaced)
    dry = {"spec": {"force": True}}
    with pytest.raises(ApiException) as exc:
        objects.patch_namespaced_custom_object(GROUP, VERSION, "shop", "failovers", name, dry, dry_run="All")
    assert exc.value.status == 422

    # what is not the spec still changes: labels, and status through its subresource
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, "shop", "failovers", name, {"metadata": {"labels": {"seen": "yes"}}}
    )
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, "shop", "failovers", name, {"status": {"status": "IN_PROGRESS"}}
    )
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, "shop", "failovers", name)
    assert stored["spec"] == current["spec"] and stored["status"] == {"status": "IN_PROGRESS"}


def test_the_shipped_crd_rules_hold_for_direct_store_writes_too(
    cluster: SandboxCluster, api: ApiClient
) -> None:
    obj = cluster.store.create("Failover", failover(), namespace="shop")
    obj["spec"]["targetCluster"] = "site-c"
    with pytest.raises(Exception, match="spec is immutable"):
        cluster.store.update("Failover", "shop", obj["metadata"]["name"], obj)


# --- rule semantics, on a CRD of the test's own ----------------------------------------------------------

RULES_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
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
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "messageExpression": "'min ' + string(self.min) + ' over max ' "
                                        "+ string(self.max)",
                                        "fieldPath": ".min",
                                    },
                                    {"rule": "self.max <= oldSelf.max", "message": "max only shrinks"},
                                ],
                                "properties": {
                                    "min": {"type": "integer"},
                                    "max": {"type": "integer"},
                                    "owner": {
                                        "type": "string",
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self == oldSelf",
                                                "reason": "FieldValueForbidden",
                                                "message": "owner cannot change",
                                            },
                                            {"rule": "self.startsWith('team-')"},
                                        ],
                                    },
                                    "ports": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"],
                                        "items": {
                                            "type": "object",
                                            "x-kubernetes-validations": [
                                                {
                                                    "rule": "self.port >= oldSelf.port",
                                                    "message": "port only grows",
                                                }
                                            ],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "port": {"type": "integer"},
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def widgets(cluster: SandboxCluster) -> Iterator[client.CustomObjectsApi]:
    api_client = cluster.api_client("admin")
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition(RULES_CRD)
    yield client.CustomObjectsApi(api_client)
    api_client.close()


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def create(widgets: client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    return widgets.create_namespaced_custom_object("example.com", "v1", "shop", "widgets", body)


def patch(widgets: client.CustomObjectsApi, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return widgets.patch_namespaced_custom_object(
        "example.com", "v1", "shop", "widgets", name, {"spec": spec}
    )


def test_rules_at_every_level_with_field_path_message_expression_and_reason(
    widgets: client.CustomObjectsApi,
) -> None:
    body = refused(create, widgets, widget("w", min=5, max=2, owner="ops"))
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "object": min 5 over max 2',
            "field": "spec.min",
        },
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: \"string\": failed rule: self.startsWith('team-')",
            "field": "spec.owner",
        },
    ]
    assert body["message"].startswith('Widget.example.com "w" is invalid: [spec.min: Invalid value: ')

    create(widgets, widget("w", min=1, max=5, owner="team-a"))  # transition rules skipped on create
    body = refused(patch, widgets, "w", {"owner": "team-b"})
    assert body["details"]["causes"] == [
        {"reason": "FieldValueForbidden", "message": "Forbidden: owner cannot change", "field": "spec.owner"}
    ]
    body = refused(patch, widgets, "w", {"max": 6})
    assert body["details"]["causes"][0]["message"] == 'Invalid value: "object": max only shrinks'
    patch(widgets, "w", {"max": 4})


def test_list_map_items_are_compared_with_the_item_of_the_same_key(widgets: client.CustomObjectsApi) -> None:
    create(widgets, widget("w", min=0, max=1, ports=[{"name": "http", "port": 80}]))
    patch(
        widgets, "w", {"ports": [{"name": "https", "port": 1}, {"name": "http", "port": 81}]}
    )  # new key: no oldSelf
    body = refused(
        patch, widgets, "w", {"ports": [{"name": "https", "port": 1}, {"name": "http", "port": 79}]}
    )
    assert body["details"]["causes"][0]["field"] == "spec.ports[1]"


def test_unchanged_values_are_not_validated_again(
    cluster: SandboxCluster, widgets: client.CustomObjectsApi
) -> None:
    create(widgets, widget("legacy", min=1, max=5, owner="team-a"))
    stricter = copy.deepcopy(RULES_CRD)
    spec_schema = stricter["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"].append({"rule": "self.max <= 3", "message": "max is 3 now"})
    api_client = cluster.api_client("admin")
    try:
        client.ApiextensionsV1Api(api_client).patch_custom_resource_definition(
            "widgets.example.com", {"spec": {"versions": stricter["spec"]["versions"]}}
        )
    finally:
        api_client.close()
    patch_meta = {"metadata": {"labels": {"touched": "yes"}}}
    widgets.patch_namespaced_custom_object("example.com", "v1", "shop", "widgets", "legacy", patch_meta)
    body = refused(patch, widgets, "legacy", {"min": 2})  # the spec changed: its rules run again
    assert body["details"]["causes"][0]["message"] == 'Invalid value: "object": max is 3 now'


def test_a_crd_whose_rule_does_not_compile_is_refused(cluster: SandboxCluster) -> None:
    broken = copy.deepcopy(RULES_CRD)
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"
    ] = [{"rule": "self.min <"}]
    api_client = cluster.api_client("admin")
    try:
        body = refused(client.ApiextensionsV1Api(api_client).create_custom_resource_definition, broken)
    finally:
        api_client.close()
    assert "x-kubernetes-validations[0].rule" in body["details"]["causes"][0]["field"]
