"""REST semantics of the sandbox API server through the official kubernetes client."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster
from tests.sandbox.helpers import deployment, status_body

pytestmark = pytest.mark.integration


def _namespace(api: ApiClient, name: str = "shop") -> None:
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})


def test_create_get_list_replace_delete(still: SandboxCluster, api: ApiClient) -> None:
    _namespace(api)
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment("shop", deployment("web", 2))
    assert created.metadata.namespace == "shop"
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.metadata.generation == 1
    assert created.spec.replicas == 2
    assert created.spec.strategy.type == "RollingUpdate"  # server-side defaulting

    fetched = apps.read_namespaced_deployment("web", "shop")
    assert fetched.metadata.resource_version == created.metadata.resource_version

    listed = apps.list_namespaced_deployment("shop")
    assert [d.metadata.name for d in listed.items] == ["web"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)

    fetched.spec.replicas = 4
    replaced = apps.replace_namespaced_deployment("web", "shop", fetched)
    assert replaced.spec.replicas == 4
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    apps.delete_namespaced_deployment("web", "shop")
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("web", "shop")
    assert missing.value.status == 404


def test_missing_object_is_a_404_not_found_status(still: SandboxCluster, api: ApiClient) -> None:
    with pytest.raises(ApiException) as exc:
        client.AppsV1Api(api).read_namespaced_deployment("nope", "default")
    body = status_body(exc.value)
    assert (body["code"], body["reason"]) == (404, "NotFound")
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "deployments", "group": "apps"}


def test_post_of_an_existing_name_is_409_already_exists(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment("default", deployment("web"))
    body = status_body(exc.value)
    assert (exc.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["details"]["name"] == "web"


def test_bodies_without_a_name_or_with_a_bad_one_are_422(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    nameless = deployment("web")
    del nameless["metadata"]["name"]
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment("default", nameless)
    body = status_body(exc.value)
    assert (exc.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"

    with pytest.raises(ApiException) as bad_name:
        apps.create_namespaced_deployment("default", deployment("Web_1"))
    assert bad_name.value.status == 422

    mismatched = deployment("web")
    mismatched["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as bad_selector:
        apps.create_namespaced_deployment("default", mismatched)
    assert "selector" in status_body(bad_selector.value)["message"]


def test_generate_name_and_namespace_defaulting(still: SandboxCluster, api: ApiClient) -> None:
    body = {
        "metadata": {"generateName": "cfg-"},
        "involvedObject": {"kind": "Pod", "name": "x"},
        "reason": "Test",
    }
    event = client.CoreV1Api(api).create_namespaced_event("default", body)
    assert event.metadata.name.startswith("cfg-") and len(event.metadata.name) > 4
    assert event.metadata.namespace == "default"


def test_create_in_a_missing_namespace_is_404(still: SandboxCluster, api: ApiClient) -> None:
    with pytest.raises(ApiException) as exc:
        client.AppsV1Api(api).create_namespaced_deployment("ghost", deployment("web"))
    assert status_body(exc.value)["message"] == 'namespaces "ghost" not found'


def test_stale_resource_version_on_put_and_patch_is_409_conflict(
    still: SandboxCluster, api: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    first = apps.create_namespaced_deployment("default", deployment("web"))
    stale = first.metadata.resource_version
    apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"touched": "yes"}}})

    first.spec.replicas = 3
    with pytest.raises(ApiException) as put:
        apps.replace_namespaced_deployment("web", "default", first)
    body = status_body(put.value)
    assert (put.value.status, body["reason"]) == (409, "Conflict")
    assert body["details"] == {"name": "web", "kind": "deployments", "group": "apps"}
    assert "the object has been modified" in body["message"]

    with pytest.raises(ApiException) as patch:
        apps.patch_namespaced_deployment(
            "web", "default", {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 5}}
        )
    assert patch.value.status == 409
    assert apps.read_namespaced_deployment("web", "default").spec.replicas == 1

    # The same write with the current version succeeds.
    current = apps.read_namespaced_deployment("web", "default")
    current.spec.replicas = 3
    assert apps.replace_namespaced_deployment("web", "default", current).spec.replicas == 3


def test_generation_moves_on_spec_changes_only(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    labelled = apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"a": "b"}}})
    assert labelled.metadata.generation == 1
    status = apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 1}})
    assert status.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert scaled.metadata.generation == 2

    co = client.CustomObjectsApi(api)
    vr = co.create_namespaced_custom_object(
        "replication.storage.openshift.io",
        "v1alpha1",
        "default",
        "volumereplications",
        {
            "apiVersion": "replication.storage.openshift.io/v1alpha1",
            "kind": "VolumeReplication",
            "metadata": {"name": "data"},
            "spec": {"replicationState": "primary"},
        },
    )
    assert vr["metadata"]["generation"] == 1
    args = ("replication.storage.openshift.io", "v1alpha1", "default", "volumereplications", "data")
    annotated = co.patch_namespaced_custom_object(*args, {"metadata": {"annotations": {"x": "y"}}})
    assert annotated["metadata"]["generation"] == 1
    demoted = co.patch_namespaced_custom_object(*args, {"spec": {"replicationState": "secondary"}})
    assert demoted["metadata"]["generation"] == 2


def test_status_subresource_separation(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment("default", {**deployment("web"), "status": {"replicas": 7}})
    assert created.status is None or created.status.replicas is None  # status is dropped on create

    main = apps.patch_namespaced_deployment("web", "default", {"status": {"replicas": 9}})
    assert main.status is None or main.status.replicas is None  # the main endpoint ignores status

    via_status = apps.patch_namespaced_deployment_status(
        "web", "default", {"spec": {"replicas": 5}, "status": {"replicas": 1, "readyReplicas": 1}}
    )
    assert via_status.status.ready_replicas == 1
    assert via_status.spec.replicas == 1  # /status ignores everything but status
    via_status.spec.replicas = 6
    via_status.status.ready_replicas = 0
    put = apps.replace_namespaced_deployment_status("web", "default", via_status)
    assert (put.spec.replicas, put.status.ready_replicas, put.metadata.generation) == (1, 0, 1)

    co = client.CustomObjectsApi(api)
    args = ("crd.hahomelabs.com", "v1alpha1", "default", "failovergroups")
    co.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "crd.hahomelabs.com/v1alpha1",
            "kind": "FailoverGroup",
            "metadata": {"name": "g"},
            "spec": {"operatorID": "op"},
            "status": {"health": "OK"},
        },
    )
    assert "status" not in co.get_namespaced_custom_object(*args, "g")
    updated = co.patch_namespaced_custom_object_status(*args, "g", {"status": {"health": "DEGRADED"}})
    assert updated["status"] == {"health": "DEGRADED"}
    assert updated["metadata"]["generation"] == 1


def test_a_write_that_changes_nothing_keeps_the_resource_version(
    still: SandboxCluster, api: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment("default", deployment("web"))
    again = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 1}})
    assert again.metadata.resource_version == created.metadata.resource_version
    assert still.store.resource_version == int(created.metadata.resource_version)


def test_one_resource_version_counter_for_all_kinds(still: SandboxCluster, api: ApiClient) -> None:
    versions = [
        int(client.CoreV1Api(api).create_namespace({"metadata": {"name": "a"}}).metadata.resource_version),
        int(
            client.AppsV1Api(api).create_namespaced_deployment("a", deployment("d")).metadata.resource_version
        ),
        int(client.CoreV1Api(api).create_namespace({"metadata": {"name": "b"}}).metadata.resource_version),
    ]
    assert versions == sorted(versions) and len(set(versions)) == 3


def test_label_selectors(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    for name, tier in (("web", "front"), ("api", "back"), ("db", "data")):
        apps.create_namespaced_deployment("default", deployment(name, labels={"tier": tier}))
    apps.patch_namespaced_deployment("db", "default", {"metadata": {"labels": {"critical": "true"}}})

    def names(selector: str) -> list[str]:
        return sorted(
            d.metadata.name for d in apps.list_namespaced_deployment("default", label_selector=selector).items
        )

    assert names("tier=front") == ["web"]
    assert names("tier==back") == ["api"]
    assert names("tier!=front") == ["api", "db"]
    assert names("tier in (front, data)") == ["db", "web"]
    assert names("tier notin (front)") == ["api", "db"]
    assert names("critical") == ["db"]
    assert names("!critical") == ["api", "web"]
    assert names("tier in (front,back),app=api") == ["api"]


def test_field_selectors(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    for name in ("web", "api"):
        apps.create_namespaced_deployment("default", deployment(name))
    picked = apps.list_deployment_for_all_namespaces(field_selector="metadata.name=api").items
    assert [d.metadata.name for d in picked] == ["api"]
    others = apps.list_namespaced_deployment("default", field_selector="metadata.name!=api").items
    assert [d.metadata.name for d in others] == ["web"]
    with pytest.raises(ApiException) as exc:
        apps.list_namespaced_deployment("default", field_selector="spec.replicas=1")
    assert exc.value.status == 400
    assert "field label not supported" in status_body(exc.value)["message"]


def test_list_pagination(still: SandboxCluster, api: ApiClient) -> None:
    core = client.CoreV1Api(api)
    for index in range(5):
        core.create_namespace({"metadata": {"name": f"ns-{index}"}})
    seen, token = [], None
    while True:
        page = core.list_namespace(limit=2, _continue=token, label_selector="")
        seen += [n.metadata.name for n in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert len(page.items) == 2
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 9  # 4 system namespaces + 5


def test_deleting_an_owner_deletes_its_dependents_unless_orphaned(
    site_a: SandboxCluster, api: ApiClient
) -> None:
    batch = client.BatchV1Api(api)
    cron = {
        "metadata": {"name": "report"},
        "spec": {
            "schedule": "0 * * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "r", "image": "r"}]}
                    }
                }
            },
        },
    }
    batch.create_namespaced_cron_job("default", cron)
    job = site_a.controllers.start_job("default", "report")
    assert job is not None
    batch.delete_namespaced_cron_job("report", "default")
    assert batch.list_namespaced_job("default").items == []

    batch.create_namespaced_cron_job("default", cron)
    kept = site_a.controllers.start_job("default", "report")
    assert kept is not None
    batch.delete_namespaced_cron_job("report", "default", propagation_policy="Orphan")
    assert [j.metadata.name for j in batch.list_namespaced_job("default").items] == [kept["metadata"]["name"]]


def test_finalizers_hold_deletion_until_removed(still: SandboxCluster, api: ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    args = ("crd.hahomelabs.com", "v1alpha1", "default", "failovers")
    co.create_namespaced_custom_object(
        *args,
        {
            "apiVersion": "crd.hahomelabs.com/v1alpha1",
            "kind": "Failover",
            "metadata": {"name": "f", "finalizers": ["failover.hahomelabs.com/cleanup"]},
            "spec": {
                "targetCluster": "site-b",
                "failoverMode": "UPTIME",
                "failoverGroups": [{"name": "shop"}],
            },
        },
    )
    co.delete_namespaced_custom_object(*args, "f")
    pending = co.get_namespaced_custom_object(*args, "f")
    assert pending["metadata"]["deletionTimestamp"]
    co.patch_namespaced_custom_object(*args, "f", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        co.get_namespaced_custom_object(*args, "f")
    assert gone.value.status == 404


def test_dry_run_changes_nothing(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    before = still.store.resource_version
    apps.create_namespaced_deployment("default", deployment("web"), dry_run="All")
    assert apps.list_namespaced_deployment("default").items == []
    apps.create_namespaced_deployment("default", deployment("web"))
    preview = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 9}}, dry_run="All")
    assert preview.spec.replicas == 9
    assert apps.read_namespaced_deployment("web", "default").spec.replicas == 1
    assert still.store.resource_version == before + 1


def test_delete_collection_and_namespace_deletion(still: SandboxCluster, api: ApiClient) -> None:
    _namespace(api, "tmp")
    apps = client.AppsV1Api(api)
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        apps.create_namespaced_deployment("tmp", deployment(name, labels={"tier": tier}))
    apps.delete_collection_namespaced_deployment("tmp", label_selector="tier=x")
    assert [d.metadata.name for d in apps.list_namespaced_deployment("tmp").items] == ["c"]
    client.CoreV1Api(api).delete_namespace("tmp")
    assert still.store.list("Deployment")[0] == []


def test_selector_is_immutable(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment(
            "web",
            "default",
            {
                "spec": {
                    "selector": {"matchLabels": {"app": "web", "v": "2"}},
                    "template": {"metadata": {"labels": {"app": "web", "v": "2"}}},
                }
            },
        )
    assert exc.value.status == 422
    assert "field is immutable" in status_body(exc.value)["message"]


@pytest.mark.parametrize(
    "gvk",
    [
        ("networking.istio.io", "v1", "virtualservices", "VirtualService"),
        ("networking.istio.io", "v1beta1", "virtualservices", "VirtualService"),
        ("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease"),
        ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization"),
        ("replication.storage.openshift.io", "v1alpha1", "volumereplications", "VolumeReplication"),
        ("crd.hahomelabs.com", "v1alpha1", "failovers", "Failover"),
        ("crd.hahomelabs.com", "v1alpha1", "failovergroups", "FailoverGroup"),
    ],
)
def test_preinstalled_custom_kinds_are_served(
    still: SandboxCluster, api: ApiClient, gvk: tuple[str, str, str, str]
) -> None:
    group, version, plural, kind = gvk
    co = client.CustomObjectsApi(api)
    body = {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": {"suspend": True},
    }
    created = co.create_namespaced_custom_object(group, version, "default", plural, body)
    assert created["apiVersion"] == f"{group}/{version}"
    listed = co.list_namespaced_custom_object(group, version, "default", plural)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["x"]
    co.delete_namespaced_custom_object(group, version, "default", plural, "x")
    assert co.list_namespaced_custom_object(group, version, "default", plural)["items"] == []


def test_virtual_services_share_storage_across_versions(still: SandboxCluster, api: ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(
        "networking.istio.io",
        "v1beta1",
        "default",
        "virtualservices",
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": {"name": "web"},
            "spec": {"hosts": ["a"]},
        },
    )
    seen = co.get_namespaced_custom_object("networking.istio.io", "v1", "default", "virtualservices", "web")
    assert seen["apiVersion"] == "networking.istio.io/v1"
    assert seen["spec"] == {"hosts": ["a"]}


def test_a_created_crd_serves_its_kind_until_deleted(still: SandboxCluster, api: ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Cluster",
                "names": {
                    "kind": "Widget",
                    "plural": "widgets",
                    "singular": "widget",
                    "listKind": "WidgetList",
                },
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )
    crd = ext.read_custom_resource_definition("widgets.example.com")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    co = client.CustomObjectsApi(api)
    co.create_cluster_custom_object(
        "example.com",
        "v1",
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}},
    )
    assert co.get_cluster_custom_object_status("example.com", "v1", "widgets", "w")["spec"] == {"size": 1}
    ext.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as exc:
        co.list_cluster_custom_object("example.com", "v1", "widgets")
    assert exc.value.status == 404
    with pytest.raises(ApiException) as misnamed:
        ext.create_custom_resource_definition(
            {
                "metadata": {"name": "wrong.example.com"},
                "spec": {
                    "group": "example.com",
                    "scope": "Cluster",
                    "names": {"kind": "Gadget", "plural": "gadgets"},
                    "versions": [{"name": "v1", "served": True, "storage": True}],
                },
            }
        )
    assert misnamed.value.status == 422
