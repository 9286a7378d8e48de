"""What lets the sandbox keep up with a whole site: event-driven controllers (a deduplicating work queue
with delayed requeues, nothing done when nothing changes), the store's indexes, RBAC decisions cached
until the RBAC objects change, and clusters in their own processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster, SandboxFleet
from sandbox.kube.samples import load_sample_copies
from tests.sandbox.conftest import FAST
from tests.sandbox.helpers import deployment, wait_for

pytestmark = pytest.mark.integration

VR = ("replication.storage.openshift.io", "v1alpha1", "default", "volumereplications")


@pytest.fixture
def site() -> Iterator[SandboxCluster]:
    with SandboxCluster("scale", install_rbac=False, **FAST) as started:
        yield started


def _quiet(cluster: SandboxCluster, *, delayed: bool = False) -> int:
    """Wait until the controllers have nothing queued (nor delayed, unless ``delayed``) and stopped
    writing; the resourceVersion then."""

    def idle() -> bool:
        controllers = cluster.controllers
        return not controllers.pending and (delayed or not controllers.delayed)

    def settled() -> int | None:
        rv = cluster.store.resource_version
        if not idle():
            return None
        time.sleep(0.1)  # several ticks: a write in flight would show
        return rv if cluster.store.resource_version == rv and idle() else None

    return wait_for(settled)


def test_controllers_do_nothing_while_nothing_changes_and_react_to_a_change(site: SandboxCluster) -> None:
    load_sample_copies(site, 3, active=True)
    apps = client.AppsV1Api(site.api_client())
    apps.patch_namespaced_deployment_scale("web", "shop-0001", {"spec": {"replicas": 1}})
    wait_for(lambda: apps.read_namespaced_deployment("web", "shop-0001").status.ready_replicas == 1)
    rv = _quiet(site)
    handled = site.controllers.handled
    time.sleep(0.3)  # thirty ticks of a full-pass controller
    assert site.controllers.handled == handled  # no object was even looked at
    assert site.store.resource_version == rv

    apps.patch_namespaced_deployment_scale("web", "shop-0002", {"spec": {"replicas": 2}})
    done = wait_for(
        lambda: (d := apps.read_namespaced_deployment("web", "shop-0002")).status.ready_replicas == 2 and d
    )
    assert done.status.observed_generation == done.metadata.generation
    assert apps.read_namespaced_deployment("web", "shop-0000").status.ready_replicas == 3  # untouched


def test_many_changes_of_one_object_are_one_queued_key(site: SandboxCluster) -> None:
    site.controllers.paused = True
    apps = client.AppsV1Api(site.api_client())
    apps.create_namespaced_deployment("default", deployment("web", 1))
    for replicas in range(2, 12):
        apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": replicas}})
    assert site.controllers.pending == 1
    site.controllers.paused = False
    settled = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("web", "default")).status
            and d.status.ready_replicas == 11
            and d
        )
    )
    assert settled.status.observed_generation == 11


def test_a_cleared_fault_and_a_changed_delay_act_at_once(site: SandboxCluster) -> None:
    co = client.CustomObjectsApi(site.api_client())
    site.controllers.volume_faults["data"] = "stuck"
    co.create_namespaced_custom_object(
        *VR,
        {
            "apiVersion": "replication.storage.openshift.io/v1alpha1",
            "kind": "VolumeReplication",
            "metadata": {"name": "data"},
            "spec": {"replicationState": "primary", "volumeReplicationClass": "rbd"},
        },
    )
    _quiet(site)
    assert "status" not in co.get_namespaced_custom_object(*VR, "data")  # stuck: never acted
    del site.controllers.volume_faults["data"]  # no change of the object: the knob alone resyncs
    wait_for(lambda: co.get_namespaced_custom_object(*VR, "data").get("status", {}).get("state") == "Primary")

    site.controllers.volume_delay = 3600.0
    co.patch_namespaced_custom_object(*VR, "data", {"spec": {"replicationState": "secondary"}})
    _quiet(site, delayed=True)  # waiting an hour: a delayed requeue, nothing polled meanwhile
    assert site.controllers.delayed == 1
    assert co.get_namespaced_custom_object(*VR, "data")["status"]["state"] == "Primary"
    site.controllers.volume_delay = 0.0
    wait_for(lambda: co.get_namespaced_custom_object(*VR, "data")["status"]["state"] == "Secondary")


def test_full_passes_are_kept_as_the_old_mode() -> None:
    with SandboxCluster("passes", install_rbac=False, full_passes=True, **FAST) as cluster:
        apps = client.AppsV1Api(cluster.api_client())
        apps.create_namespaced_deployment("default", deployment("web", 2))
        wait_for(
            lambda: (
                ((d := apps.read_namespaced_deployment("web", "default")).status and d.status.ready_replicas)
                == 2
            )
        )
        assert cluster.controllers.pending == 0  # no queue in this mode


def test_lists_by_namespace_and_label_follow_relabels_and_deletions(site: SandboxCluster) -> None:
    site.controllers.paused = True
    store = site.store
    for ns in ("one", "two"):
        store.create("namespaces", {"metadata": {"name": ns}})
        for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
            store.create("Deployment", deployment(name, labels={"tier": tier, "ns": ns}), namespace=ns)

    def names(namespace: str | None, selector: str) -> list[str]:
        items = store.list("Deployment", namespace, label_selector=selector)[0]
        return [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in items]

    assert names(None, "tier=web") == ["one/a", "one/c", "two/a", "two/c"]  # sorted, as a real list
    assert names("two", "tier in (web,db),ns=two") == ["two/a", "two/b", "two/c"]
    assert names("one", "tier=web,app!=c") == ["one/a"]  # the index narrows, the matcher decides
    assert names(None, "tier=none") == []
    store.update(
        "Deployment", "one", "a", lambda d: {**d, "metadata": {**d["metadata"], "labels": {"app": "a"}}}
    )
    assert names(None, "tier=web") == ["one/c", "two/a", "two/c"]
    assert names(None, "app=a") == ["one/a", "two/a"]
    store.delete("namespaces", None, "two")
    assert names(None, "tier") == ["one/b", "one/c"]
    assert store.keys("Deployment") == [("one", "a"), ("one", "b"), ("one", "c")]


def test_a_binding_added_or_removed_at_run_time_is_enforced_on_the_next_request() -> None:
    with SandboxCluster("rbac-cache", run_controllers=False) as cluster:
        cluster.add_user("jane@example.com", ["ops", "system:authenticated"], alias="jane")
        jane = client.AppsV1Api(cluster.api_client("jane"))
        cluster.store.create("namespaces", {"metadata": {"name": "shop"}})
        with pytest.raises(ApiException) as denied:
            jane.list_namespaced_deployment("shop")
        assert denied.value.status == 403
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "view", "namespace": "shop"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "Group", "name": "ops"}],
        }
        cluster.store.put(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}],
            }
        )
        cluster.store.put(binding)
        assert jane.list_namespaced_deployment("shop").items == []  # allowed now
        cluster.store.put(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
            }
        )
        with pytest.raises(ApiException) as narrowed:  # the role changed: the cached decision is gone
            jane.list_namespaced_deployment("shop")
        assert narrowed.value.status == 403


def test_a_fleet_of_processes_serves_the_same_kubeconfig(tmp_path: Path) -> None:
    from kubernetes import config

    with SandboxFleet(
        ["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig", processes=True, sample_groups=2, **FAST
    ) as fleet:
        site_a = fleet["site-a"]
        assert site_a.pid is not None and site_a.cpu_seconds() > 0 and site_a.rss_bytes() > 0
        api: ApiClient = config.new_client_from_config(
            config_file=str(fleet.kubeconfig_path), context="site-a"
        )
        worker = client.CustomObjectsApi(api)
        web = worker.get_namespaced_custom_object("apps", "v1", "shop-0001", "deployments", "web")
        assert web["status"]["readyReplicas"] == 3
        with pytest.raises(ApiException) as denied:  # RBAC enforced in the child: the worker lists no Pods
            client.CoreV1Api(api).list_namespaced_pod("shop-0001")
        assert denied.value.status == 403
        site_a.set_knob("controllers", "replica_step", 0.0)
        worker.patch_namespaced_custom_object(
            "apps", "v1", "shop-0001", "deployments", "web", {"spec": {"replicas": 1}}
        )
        wait_for(
            lambda: (
                worker.get_namespaced_custom_object("apps", "v1", "shop-0001", "deployments", "web")[
                    "status"
                ].get("readyReplicas")
                == 1
            )
        )
        site_a.set_down(True)
        with pytest.raises(urllib3.exceptions.HTTPError):  # the connection is refused
            worker.get_namespaced_custom_object(
                "apps", "v1", "shop-0001", "deployments", "web", _request_timeout=2
            )
        site_a.set_down(False)
        assert worker.get_namespaced_custom_object("apps", "v1", "shop-0001", "deployments", "web")
        with pytest.raises(AttributeError, match="runs in its own process"):
            _ = site_a.store
        api.close()
        pid = site_a.pid
    assert site_a.pid is None and not Path(f"/proc/{pid}").exists()
