"""Patch formats: the pure functions, and what the server accepts or refuses per kind."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import ApiError, SandboxCluster
from sandbox.kube.patch import json_patch, merge_patch, strategic_merge_patch
from tests.sandbox.helpers import deployment, raw_request, status_body


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3], "new": {"x": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3], "new": {"x": 1}}
    assert target["c"] == {"d": "e", "f": "g"}  # the input is not modified


def test_json_patch_operations() -> None:
    doc = {"metadata": {"labels": {"a/b": "1"}}, "items": [1, 2]}
    ops = [
        {"op": "add", "path": "/metadata/labels/c", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a~1b"},
        {"op": "replace", "path": "/items/0", "value": 10},
        {"op": "add", "path": "/items/-", "value": 3},
        {"op": "copy", "from": "/items/0", "path": "/first"},
        {"op": "move", "from": "/first", "path": "/moved"},
        {"op": "test", "path": "/moved", "value": 10},
    ]
    assert json_patch(doc, ops) == {"metadata": {"labels": {"c": "2"}}, "items": [10, 2, 3], "moved": 10}
    with pytest.raises(ApiError) as failed:
        json_patch(doc, [{"op": "test", "path": "/items/0", "value": 99}])
    assert failed.value.code == 422
    with pytest.raises(ApiError) as missing:
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert missing.value.code == 422


def test_strategic_merge_merges_lists_by_their_merge_key() -> None:
    target = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {"name": "sidecar", "image": "side:1"},
            ]
        },
        "metadata": {"finalizers": ["a"]},
    }
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:2",
                    "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                },
            ],
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
        },
        "metadata": {"finalizers": ["b"]},
    }
    result = strategic_merge_patch(target, patch)
    assert [c["name"] for c in result["spec"]["containers"]] == ["sidecar", "app"]
    app = result["spec"]["containers"][1]
    assert app["image"] == "app:2"
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert result["metadata"]["finalizers"] == ["a", "b"]
    replaced = strategic_merge_patch(
        target, {"spec": {"containers": [{"$patch": "replace"}, {"name": "only"}]}}
    )
    assert replaced["spec"]["containers"] == [{"name": "only"}]
    retained = strategic_merge_patch({"x": 1, "y": 2}, {"$retainKeys": ["y"], "y": 3})
    assert retained == {"y": 3}


@pytest.mark.integration
def test_strategic_merge_patch_through_the_client(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    body = deployment("web")
    body["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "side:1"})
    apps.create_namespaced_deployment("default", body)
    # A dict body on a built-in kind is sent as application/strategic-merge-patch+json.
    patched = apps.patch_namespaced_deployment(
        "web",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}},
    )
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [
        ("main", "nginx:2"),
        ("sidecar", "side:1"),
    ]


@pytest.mark.integration
def test_json_patch_through_the_client(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    patched = apps.patch_namespaced_deployment(
        "web",
        "default",
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 0},
            {
                "op": "add",
                "path": "/metadata/annotations",
                "value": {"failover.hahomelabs.com/replicas": "1"},
            },
        ],
    )
    assert patched.spec.replicas == 0
    assert patched.metadata.annotations == {"failover.hahomelabs.com/replicas": "1"}
    with pytest.raises(ApiException) as failed:
        apps.patch_namespaced_deployment(
            "web", "default", [{"op": "test", "path": "/spec/replicas", "value": 5}]
        )
    assert failed.value.status == 422


@pytest.mark.integration
def test_custom_resources_take_merge_and_json_patch_but_refuse_strategic(
    still: SandboxCluster, api: ApiClient
) -> None:
    co = client.CustomObjectsApi(api)
    args = ("helm.toolkit.fluxcd.io", "v2", "default", "helmreleases")
    co.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "shop"},
            "spec": {"suspend": False, "values": {"a": 1, "b": 2}},
        },
    )
    merged = co.patch_namespaced_custom_object(
        *args, "shop", {"spec": {"suspend": True, "values": {"a": None}}}
    )
    assert merged["spec"] == {"suspend": True, "values": {"b": 2}}
    operations = [{"op": "replace", "path": "/spec/suspend", "value": False}]
    # CustomObjectsApi sends merge-patch unless told otherwise; a list is not a merge patch (400).
    with pytest.raises(ApiException) as not_a_merge_patch:
        co.patch_namespaced_custom_object(*args, "shop", operations)
    assert not_a_merge_patch.value.status == 400
    patched = co.patch_namespaced_custom_object(
        *args, "shop", operations, _content_type="application/json-patch+json"
    )
    assert patched["spec"]["suspend"] is False

    path = "/apis/helm.toolkit.fluxcd.io/v2/namespaces/default/helmreleases/shop"
    for content_type in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
        code, _, body = raw_request(
            still.url, "PATCH", path, json.dumps({"spec": {}}).encode(), {"Content-Type": content_type}
        )
        assert code == 415, content_type
        assert json.loads(body)["reason"] == "UnsupportedMediaType"


@pytest.mark.integration
def test_server_side_apply_is_refused_with_415_for_built_ins_too(
    still: SandboxCluster, api: ApiClient
) -> None:
    client.AppsV1Api(api).create_namespaced_deployment("default", deployment("web"))
    with pytest.raises(ApiException) as exc:
        client.AppsV1Api(api).patch_namespaced_deployment(
            "web",
            "default",
            {"spec": {"replicas": 2}},
            field_manager="test",
            _content_type="application/apply-patch+yaml",
        )
    assert exc.value.status == 415
    assert "accepted media types include" in status_body(exc.value)["message"]
