"""The /scale subresource and list-then-watch, through the official client."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster
from tests.sandbox.conftest import ClientFactory
from tests.sandbox.helpers import deployment, raw_request, statefulset, status_body

pytestmark = pytest.mark.integration


def test_scale_subresource_get_patch_replace(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web", 2))
    scale = apps.read_namespaced_deployment_scale("web", "default")
    assert (scale.kind, scale.api_version, scale.spec.replicas) == ("Scale", "autoscaling/v1", 2)
    assert scale.status.selector == "app=web"

    patched = apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 4}})
    assert patched.spec.replicas == 4
    target = apps.read_namespaced_deployment("web", "default")
    assert (target.spec.replicas, target.metadata.generation) == (4, 2)

    scale.spec.replicas = 1  # still carries the resourceVersion from before the patch
    with pytest.raises(ApiException) as stale:
        apps.replace_namespaced_deployment_scale("web", "default", scale)
    assert status_body(stale.value)["reason"] == "Conflict"
    fresh = apps.read_namespaced_deployment_scale("web", "default")
    fresh.spec.replicas = 1
    assert apps.replace_namespaced_deployment_scale("web", "default", fresh).spec.replicas == 1

    apps.create_namespaced_stateful_set("default", statefulset("db", 1))
    assert (
        apps.patch_namespaced_stateful_set_scale("db", "default", {"spec": {"replicas": 3}}).spec.replicas
        == 3
    )
    with pytest.raises(ApiException) as negative:
        apps.patch_namespaced_stateful_set_scale("db", "default", {"spec": {"replicas": -1}})
    assert negative.value.status == 422


def _collect(stream: Any) -> list[tuple[str, str]]:
    return [(event["type"], event["raw_object"]["metadata"].get("name", "")) for event in stream]


def _take(func: Any, count: int, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
    """The first ``count`` events of a watch (stopped then, so tests need not wait for timeouts)."""
    stream = watch.Watch()
    events = []
    for event in stream.stream(func, *args, timeout_seconds=5, **kwargs):
        events.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
        if len(events) == count:
            stream.stop()
    return events


def test_list_then_watch_sees_only_later_changes_in_order(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("old"))
    listed = apps.list_namespaced_deployment("default")
    apps.create_namespaced_deployment("default", deployment("new"))
    apps.patch_namespaced_deployment("new", "default", {"spec": {"replicas": 2}})
    apps.delete_namespaced_deployment("old", "default")

    events = _take(
        apps.list_namespaced_deployment, 3, "default", resource_version=listed.metadata.resource_version
    )
    assert events == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "old")]


def test_watch_without_resource_version_starts_with_the_current_state(
    still: SandboxCluster, api: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    for name in ("a", "b"):
        apps.create_namespaced_deployment("default", deployment(name))
    events = _take(apps.list_namespaced_deployment, 2, "default")
    assert events == [("ADDED", "a"), ("ADDED", "b")]


def test_timeout_seconds_closes_the_stream(still: SandboxCluster, api: ApiClient) -> None:
    pods = client.CoreV1Api(api)
    pods.list_namespaced_pod("default")  # warm the client up so only the watch is timed
    started = time.monotonic()
    events = _collect(
        watch.Watch().stream(
            pods.list_namespaced_pod,
            "default",
            resource_version=str(still.store.resource_version),
            timeout_seconds=1,
        )
    )
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 <= elapsed < 3


def test_watch_from_a_compacted_resource_version_gets_410_gone(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    still.store.history_limit = 3
    start = apps.list_namespaced_deployment("default").metadata.resource_version
    for index in range(5):
        apps.create_namespaced_deployment("default", deployment(f"d{index}"))
    with pytest.raises(ApiException) as exc:
        list(
            watch.Watch().stream(
                apps.list_namespaced_deployment, "default", resource_version=start, timeout_seconds=1
            )
        )
    assert exc.value.status == 410
    assert "Expired" in str(exc.value.reason)

    # The raw stream: HTTP 200, one ERROR event carrying a 410 Status, as the real watch cache sends.
    code, headers, body = raw_request(
        still.url, "GET", f"/apis/apps/v1/namespaces/default/deployments?watch=1&resourceVersion={start}"
    )
    assert code == 200 and headers["transfer-encoding"] == "chunked"
    event = json.loads(body.decode().splitlines()[0])
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")

    still.store.compact()
    latest = str(still.store.resource_version)
    with pytest.raises(ApiException) as compacted:
        list(
            watch.Watch().stream(
                apps.list_namespaced_deployment,
                "default",
                resource_version=str(int(latest) - 1),
                timeout_seconds=1,
            )
        )
    assert compacted.value.status == 410
    apps.create_namespaced_deployment("default", deployment("after"))
    assert _take(apps.list_namespaced_deployment, 1, "default", resource_version=latest) == [
        ("ADDED", "after")
    ]


def test_chunked_newline_delimited_events(still: SandboxCluster, api: ApiClient) -> None:
    start = still.store.resource_version
    client.AppsV1Api(api).create_namespaced_deployment("default", deployment("web"))
    code, headers, body = raw_request(
        still.url,
        "GET",
        f"/apis/apps/v1/namespaces/default/deployments?watch=true&resourceVersion={start}&timeoutSeconds=1",
    )
    assert code == 200
    assert headers["transfer-encoding"] == "chunked" and headers["content-type"] == "application/json"
    lines = body.decode().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ADDED"
    assert event["object"]["kind"] == "Deployment" and event["object"]["apiVersion"] == "apps/v1"


def test_selector_watch_sees_objects_enter_and_leave(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    start = str(still.store.resource_version)
    apps.create_namespaced_deployment("default", deployment("web", labels={"tier": "front"}))
    apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"tier": "back"}}})
    apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"tier": "front"}}})
    apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    events = _take(
        apps.list_namespaced_deployment, 4, "default", label_selector="tier=front", resource_version=start
    )
    assert [e[0] for e in events] == ["ADDED", "DELETED", "ADDED", "MODIFIED"]


def test_bookmarks_carry_the_latest_resource_version(still: SandboxCluster, api: ApiClient) -> None:
    still.watch_settings.bookmark_interval = 0.1
    co = client.CustomObjectsApi(api)
    start = str(still.store.resource_version)
    client.AppsV1Api(api).create_namespaced_deployment("default", deployment("web"))  # another kind
    stream = watch.Watch()
    events = []
    for event in stream.stream(
        co.list_namespaced_custom_object,
        "crd.hahomelabs.com",
        "v1alpha1",
        "default",
        "failovers",
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        events.append(event)
        if len(events) == 2:
            stream.stop()
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]  # the Deployment is not this watch's kind
    assert events[-1]["raw_object"]["metadata"]["resourceVersion"] == str(still.store.resource_version)
    assert stream.resource_version == str(still.store.resource_version)


def test_watch_on_custom_objects_and_controller_writes(site_a: SandboxCluster, api: ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    args = ("replication.storage.openshift.io", "v1alpha1", "default", "volumereplications")
    start = str(site_a.store.resource_version)
    co.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "replication.storage.openshift.io/v1alpha1",
            "kind": "VolumeReplication",
            "metadata": {"name": "data"},
            "spec": {"replicationState": "primary"},
        },
    )
    states = []
    stream = watch.Watch()
    for event in stream.stream(
        co.list_namespaced_custom_object, *args, resource_version=start, timeout_seconds=3
    ):
        states.append((event["type"], (event["object"].get("status") or {}).get("state")))
        if states[-1] == ("MODIFIED", "Primary"):
            stream.stop()
    assert states[0] == ("ADDED", None)
    assert states[-1] == ("MODIFIED", "Primary")


def test_a_bad_resource_version_is_400(still: SandboxCluster) -> None:
    code, _, body = raw_request(
        still.url, "GET", "/api/v1/namespaces/default/pods?watch=1&resourceVersion=abc"
    )
    assert code == 400 and json.loads(body)["reason"] == "BadRequest"


def test_stopping_the_server_ends_open_watches(site_a: SandboxCluster, clients: ClientFactory) -> None:
    api = clients("site-a")
    ended = threading.Event()
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for _ in watch.Watch().stream(
                client.CoreV1Api(api).list_namespaced_pod,
                "default",
                resource_version=str(site_a.store.resource_version),
                timeout_seconds=30,
            ):
                pass
        except Exception as exc:  # a cut connection may surface as a protocol error
            errors.append(exc)
        finally:
            ended.set()

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.2)
    site_a.set_down(True)
    assert ended.wait(3), "the watch did not end when the site went down"
    follower.join()
    site_a.set_down(False)
