"""The simulated controllers: workloads, VolumeReplications, Flux, CronJobs and Jobs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from sandbox.kube import SandboxCluster
from sandbox.kube.patch import merge_patch
from sandbox.kube.store import ObjectStore
from tests.sandbox.helpers import deployment, statefulset, wait_for

pytestmark = pytest.mark.integration

VR = ("replication.storage.openshift.io", "v1alpha1", "default", "volumereplications")
HR = ("helm.toolkit.fluxcd.io", "v2", "default", "helmreleases")


def _history(store: ObjectStore, kind: str, name: str, since: int) -> list[dict[str, Any]]:
    """Every stored state of one object after ``since`` (from the watch history), oldest first."""
    key = store.kind(kind).key
    events, _ = store.events_after(since, 0)
    return [e.obj for e in events if e.key == key and e.obj["metadata"]["name"] == name]


def _conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions", [])}


def test_deployment_observes_the_generation_first_then_steps_replicas(
    site_a: SandboxCluster, api: ApiClient
) -> None:
    site_a.controllers.replica_step = 0.02
    apps = client.AppsV1Api(api)
    start = site_a.store.resource_version
    apps.create_namespaced_deployment("default", deployment("web", 3))
    done = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("web", "default")).status
            and d.status.ready_replicas == 3
            and d
        )
    )
    assert done.status.observed_generation == 1
    assert done.status.available_replicas == done.status.updated_replicas == done.status.replicas == 3
    assert {c.type: c.status for c in done.status.conditions} == {"Available": "True", "Progressing": "True"}

    states = [s.get("status") or {} for s in _history(site_a.store, "Deployment", "web", start)]
    assert states[0] == {}  # created with no status
    assert states[1]["observedGeneration"] == 1 and "readyReplicas" not in states[1]  # observed first
    assert [s.get("readyReplicas", 0) for s in states[1:]] == [0, 1, 2, 3]  # then one replica at a time

    scaled_from = site_a.store.resource_version
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 0}})
    zero = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("web", "default")).status.observed_generation == 2
            and d.status.replicas is None
            and d
        )
    )
    # Zero counters are omitted, as in the real API (omitempty): clients must read "missing" as 0.
    assert (zero.status.ready_replicas, zero.status.available_replicas) == (None, None)
    after = [s.get("status") or {} for s in _history(site_a.store, "Deployment", "web", scaled_from)]
    assert after[1]["observedGeneration"] == 2 and after[1]["readyReplicas"] == 3


def test_statefulset_keeps_zero_replicas_and_rolls_out_a_new_template(
    site_a: SandboxCluster, api: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_stateful_set("default", statefulset("db", 2))
    wait_for(
        lambda: (s := apps.read_namespaced_stateful_set("db", "default").status) and s.ready_replicas == 2
    )
    start = site_a.store.resource_version
    apps.patch_namespaced_stateful_set(
        "db",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}},
    )
    wait_for(
        lambda: (
            (s := apps.read_namespaced_stateful_set("db", "default").status).observed_generation == 2
            and s.updated_replicas == 2
        )
    )
    updated = [
        (s.get("status") or {}).get("updatedReplicas", 0)
        for s in _history(site_a.store, "StatefulSet", "db", start)
    ]
    assert 0 in updated[1:]  # the rollout started from zero updated replicas

    apps.patch_namespaced_stateful_set_scale("db", "default", {"spec": {"replicas": 0}})
    wait_for(lambda: apps.read_namespaced_stateful_set("db", "default").status.replicas == 0)
    raw = site_a.store.get("StatefulSet", "default", "db")["status"]
    assert raw["replicas"] == 0 and raw["availableReplicas"] == 0 and "readyReplicas" not in raw


def _volume(api: ApiClient, name: str, state: str) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        *VR,
        {
            "apiVersion": "replication.storage.openshift.io/v1alpha1",
            "kind": "VolumeReplication",
            "metadata": {"name": name},
            "spec": {"replicationState": state, "volumeReplicationClass": "rbd"},
        },
    )


def test_volume_replication_promotion_and_demotion(site_a: SandboxCluster, api: ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    _volume(api, "data", "primary")
    primary = wait_for(
        lambda: (
            (o := co.get_namespaced_custom_object(*VR, "data")).get("status", {}).get("state") == "Primary"
            and o
        )
    )
    assert primary["status"]["observedGeneration"] == 1
    assert _conditions(primary) == {
        "Completed": ("True", "Promoted"),
        "Degraded": ("False", "Healthy"),
        "Resyncing": ("False", "NotResyncing"),
    }

    start = site_a.store.resource_version
    co.patch_namespaced_custom_object(*VR, "data", {"spec": {"replicationState": "secondary"}})
    settled = wait_for(
        lambda: (
            _conditions(o := co.get_namespaced_custom_object(*VR, "data")).get("Degraded")
            == ("False", "Healthy")
            and o["status"]["state"] == "Secondary"
            and o
        )
    )
    assert settled["status"]["observedGeneration"] == 2
    first = next(
        s
        for s in _history(site_a.store, "VolumeReplication", "data", start)
        if (s.get("status") or {}).get("observedGeneration") == 2
    )
    assert first["status"]["state"] == "Secondary"
    assert _conditions(first)["Degraded"] == ("True", "VolumeDegraded")  # briefly degraded while resyncing
    assert _conditions(first)["Completed"] == ("True", "Demoted")

    co.patch_namespaced_custom_object(*VR, "data", {"spec": {"replicationState": "resync"}})
    wait_for(lambda: co.get_namespaced_custom_object(*VR, "data")["status"]["observedGeneration"] == 3)
    assert co.get_namespaced_custom_object(*VR, "data")["status"]["state"] == "Secondary"


def test_volume_replication_faults(site_a: SandboxCluster, api: ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    site_a.controllers.volume_faults.update({"sticky": "degraded", "frozen": "stuck", "broken": "fail"})
    for name in ("sticky", "frozen", "broken"):
        _volume(api, name, "secondary")
    wait_for(lambda: co.get_namespaced_custom_object(*VR, "broken").get("status"))
    wait_for(lambda: co.get_namespaced_custom_object(*VR, "sticky").get("status"))
    sticky = co.get_namespaced_custom_object(*VR, "sticky")
    time.sleep(site_a.controllers.volume_resync_delay * 3)  # long past when a healthy volume settles
    assert _conditions(co.get_namespaced_custom_object(*VR, "sticky"))["Degraded"] == (
        "True",
        "VolumeDegraded",
    )
    assert sticky["status"]["state"] == "Secondary"
    assert "status" not in co.get_namespaced_custom_object(*VR, "frozen")
    broken = co.get_namespaced_custom_object(*VR, "broken")
    assert _conditions(broken)["Completed"] == ("False", "FailedToDemote")
    assert _conditions(broken)["Degraded"] == ("True", "Error")


def _helm_release(api: ApiClient, name: str, suspend: bool) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        *HR,
        {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": name},
            "spec": {"suspend": suspend, "interval": "5m"},
        },
    )


def test_flux_reconciles_a_requested_reconcile_unless_suspended(
    site_a: SandboxCluster, api: ApiClient
) -> None:
    co = client.CustomObjectsApi(api)
    _helm_release(api, "shop", suspend=False)
    wait_for(
        lambda: _conditions(co.get_namespaced_custom_object(*HR, "shop")).get("Ready", ("",))[0] == "True"
    )

    start = site_a.store.resource_version
    co.patch_namespaced_custom_object(
        *HR,
        "shop",
        {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2024-05-01T10:00:00Z"}}},
    )
    handled = wait_for(
        lambda: (
            (o := co.get_namespaced_custom_object(*HR, "shop"))["status"].get("lastHandledReconcileAt")
            == "2024-05-01T10:00:00Z"
            and o
        )
    )
    assert _conditions(handled)["Ready"][0] == "True"
    readiness = [
        _conditions(s).get("Ready", ("",))[0] for s in _history(site_a.store, "HelmRelease", "shop", start)
    ]
    assert "Unknown" in readiness  # progressing before ready

    co.patch_namespaced_custom_object(*HR, "shop", {"spec": {"suspend": True}})
    suspended_rv = site_a.store.resource_version
    co.patch_namespaced_custom_object(
        *HR,
        "shop",
        {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2024-05-01T11:00:00Z"}}},
    )
    time.sleep(site_a.controllers.flux_delay * 4)  # long past when an unsuspended release reconciles
    idle = co.get_namespaced_custom_object(*HR, "shop")
    assert idle["status"]["lastHandledReconcileAt"] == "2024-05-01T10:00:00Z"
    assert int(idle["metadata"]["resourceVersion"]) == suspended_rv + 1  # only our annotation write

    co.patch_namespaced_custom_object(*HR, "shop", {"spec": {"suspend": False}})  # resumed: reconciles
    resumed = wait_for(
        lambda: (
            (o := co.get_namespaced_custom_object(*HR, "shop"))["status"].get("lastHandledReconcileAt")
            == "2024-05-01T11:00:00Z"
            and o
        )
    )
    assert resumed["status"]["observedGeneration"] == resumed["metadata"]["generation"]


def test_flux_fault_reports_not_ready(site_a: SandboxCluster, api: ApiClient) -> None:
    site_a.controllers.flux_faults["bad"] = "fail"
    _helm_release(api, "bad", suspend=False)
    co = client.CustomObjectsApi(api)
    failed = wait_for(
        lambda: (
            _conditions(o := co.get_namespaced_custom_object(*HR, "bad")).get("Ready", ("",))[0] == "False"
            and o
        )
    )
    assert _conditions(failed)["Ready"] == ("False", "UpgradeFailed")


def _cronjob(api: ApiClient, name: str = "report", suspend: bool = False) -> None:
    client.BatchV1Api(api).create_namespaced_cron_job(
        "default",
        {
            "metadata": {"name": name},
            "spec": {
                "schedule": "0 * * * *",
                "suspend": suspend,
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "r", "image": "report:1"}],
                            }
                        }
                    }
                },
            },
        },
    )


def test_cronjob_jobs_run_finish_and_leave_the_active_list(site_a: SandboxCluster, api: ApiClient) -> None:
    batch = client.BatchV1Api(api)
    _cronjob(api)
    job = site_a.controllers.start_job("default", "report")
    assert job is not None and job["status"]["active"] == 1
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    active = batch.read_namespaced_cron_job("report", "default").status.active
    assert [ref.name for ref in active] == [job["metadata"]["name"]]

    finished = wait_for(
        lambda: (
            (j := batch.read_namespaced_job(job["metadata"]["name"], "default")).status.completion_time and j
        )
    )
    assert finished.status.succeeded == 1
    assert {c.type for c in finished.status.conditions} == {"Complete", "SuccessCriteriaMet"}
    cron = wait_for(
        lambda: (c := batch.read_namespaced_cron_job("report", "default")).status.active is None and c
    )
    assert cron.status.last_successful_time is not None


def test_deleted_jobs_leave_and_suspended_cronjobs_start_none(site_a: SandboxCluster, api: ApiClient) -> None:
    site_a.controllers.job_duration = None  # jobs run until deleted
    batch = client.BatchV1Api(api)
    _cronjob(api)
    job = site_a.controllers.start_job("default", "report")
    assert job is not None
    batch.delete_namespaced_job(job["metadata"]["name"], "default")
    wait_for(lambda: batch.read_namespaced_cron_job("report", "default").status.active is None)

    batch.patch_namespaced_cron_job("report", "default", {"spec": {"suspend": True}})
    assert site_a.controllers.start_job("default", "report") is None
    assert batch.list_namespaced_job("default").items == []


def test_cronjob_interval_starts_jobs_while_not_suspended(site_a: SandboxCluster, api: ApiClient) -> None:
    site_a.controllers.cronjob_interval = 0.05
    batch = client.BatchV1Api(api)
    _cronjob(api, "tick")
    _cronjob(api, "off", suspend=True)
    wait_for(lambda: len(batch.list_namespaced_job("default").items) >= 2)
    site_a.controllers.cronjob_interval = None
    owners = {j.metadata.owner_references[0].name for j in batch.list_namespaced_job("default").items}
    assert owners == {"tick"}


def test_controllers_never_clobber_a_concurrent_client_write(
    site_a: SandboxCluster, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_a.controllers.paused = True
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web", 2))
    store = site_a.store
    original = store.update
    raced = []

    def racing_update(kind: Any, namespace: Any, name: Any, body: Any, **kwargs: Any) -> Any:
        if kwargs.get("subresource") == "status" and not raced:
            # A client writes between the controller's read and its write.
            change = {"metadata": {"labels": {"client": "wrote"}}, "spec": {"replicas": 5}}
            raced.append(original(kind, namespace, name, lambda current: merge_patch(current, change)))
        return original(kind, namespace, name, body, **kwargs)

    monkeypatch.setattr(store, "update", racing_update)
    site_a.controllers.run_once()  # sees the new generation; observing it is due workload_delay later
    time.sleep(site_a.controllers.workload_delay * 2)
    site_a.controllers.run_once()  # reads, races, gets 409, writes nothing
    current = store.get("Deployment", "default", "web")
    assert raced and current["metadata"]["resourceVersion"] == raced[0]["metadata"]["resourceVersion"]
    assert "status" not in current and current["metadata"]["labels"]["client"] == "wrote"
    monkeypatch.undo()
    site_a.controllers.paused = False
    settled = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("web", "default")).status
            and d.status.ready_replicas == 5
            and d
        )
    )
    assert settled.status.observed_generation == 2


def test_controller_threads_stop_with_the_cluster() -> None:
    cluster = SandboxCluster("solo", tick=0.01, install_rbac=False)
    cluster.start()
    thread = cluster.controllers._thread
    assert thread is not None and thread.is_alive()
    cluster.stop()
    assert not thread.is_alive()
