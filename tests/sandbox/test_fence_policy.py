"""The shipped fence policies (deploy/fencing/policies.yaml), installed by every sandbox cluster, on their
own: which writes of the worker identity they refuse, and that nobody can lower a group's fence.

The table covers every combination of the object's old epoch, the written epoch and the group's fence,
each below, equal to or above a reference value, or absent: a write is refused when its epoch is
below the fence or below the object's old epoch (an absent epoch or fence counts as 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster
from tests.sandbox.helpers import deployment, status_body

pytestmark = pytest.mark.integration

GROUP_LABEL = "failover.hahomelabs.com/group"
EPOCH = "failover.hahomelabs.com/epoch"
FENCE = "failover.hahomelabs.com/fence"
CRD_GROUP, VERSION = "crd.hahomelabs.com", "v1alpha1"
NAMESPACE = "shop"
REF = 5
LEVELS = {"absent": None, "below": REF - 1, "equal": REF, "above": REF + 1}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SandboxCluster]:
    with SandboxCluster("fenced", run_controllers=False, install_rbac=False) as started:
        started.store.create("namespaces", {"metadata": {"name": NAMESPACE}})
        yield started


@pytest.fixture(scope="module")
def worker(cluster: SandboxCluster) -> Iterator[ApiClient]:
    api = cluster.api_client("worker")
    yield api
    api.close()


@pytest.fixture(scope="module")
def admin(cluster: SandboxCluster) -> Iterator[ApiClient]:
    api = cluster.api_client("admin")
    yield api
    api.close()


def _annotations(key: str, value: int | None) -> dict[str, str]:
    return {} if value is None else {key: str(value)}


def make_group(admin: ApiClient, name: str, fence: int | None) -> None:
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        CRD_GROUP,
        VERSION,
        NAMESPACE,
        "failovergroups",
        {
            "apiVersion": f"{CRD_GROUP}/{VERSION}",
            "kind": "FailoverGroup",
            "metadata": {"name": name, "annotations": _annotations(FENCE, fence)},
            "spec": {},
        },
    )


def make_object(admin: ApiClient, name: str, group: str | None, epoch: int | None) -> None:
    body = deployment(name, labels={GROUP_LABEL: group} if group else {})
    body["metadata"]["annotations"] = _annotations(EPOCH, epoch)
    client.AppsV1Api(admin).create_namespaced_deployment(NAMESPACE, body)


def write(api: ApiClient, name: str, epoch: int | None, replicas: int = 0) -> None:
    """A write like the orchestrator's: scale the object and stamp its epoch (None: drop it)."""
    patch = {
        "metadata": {"annotations": {EPOCH: None if epoch is None else str(epoch)}},
        "spec": {"replicas": replicas},
    }
    client.AppsV1Api(api).patch_namespaced_deployment(name, NAMESPACE, patch)


def fenced(call: Any, *args: Any) -> str:
    """The policy's message of a refused write (asserting the refusal's shape on the way)."""
    with pytest.raises(ApiException) as exc:
        call(*args)
    body = status_body(exc.value)
    assert (exc.value.status, body["reason"]) == (403, "Forbidden"), body
    message = body["details"]["causes"][0]["message"].split("denied request: ", 1)[1]
    assert message.startswith("fenced:"), message
    return message


CASES = list(itertools.product(LEVELS, repeat=3))


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_a_worker_write_is_refused_below_the_fence_or_below_the_old_epoch(
    cluster: SandboxCluster, worker: ApiClient, admin: ApiClient, case: tuple[str, str, str]
) -> None:
    old, new, fence = case
    name = f"{old}-{new}-{fence}"
    make_group(admin, name, LEVELS[fence])
    make_object(admin, name, name, LEVELS[old])
    epoch, old_epoch, fence_value = (LEVELS[x] or 0 for x in (new, old, fence))
    below_fence = (
        f"fenced: epoch {epoch} is below the fence {fence_value} of FailoverGroup {name}: "
        "a newer failover owns this group"
    )
    lowers = f"fenced: epoch {epoch} would lower the object epoch {old_epoch}: a newer failover wrote it"
    expected = [
        m for m, refused in ((below_fence, epoch < fence_value), (lowers, epoch < old_epoch)) if refused
    ]
    if expected:
        # Both may fail: the namespace holds every case's group, each a param validated in turn, and
        # the first failing (param, validation) is reported.
        assert fenced(write, worker, name, LEVELS[new]) in expected
        assert cluster.store.get("Deployment", NAMESPACE, name)["spec"]["replicas"] == 1
    else:
        write(worker, name, LEVELS[new])
        assert cluster.store.get("Deployment", NAMESPACE, name)["spec"]["replicas"] == 0


def test_an_admin_write_is_never_fenced(cluster: SandboxCluster, admin: ApiClient) -> None:
    make_group(admin, "by-hand", 9)
    make_object(admin, "by-hand", "by-hand", 9)
    write(admin, "by-hand", 1)  # below the fence and the object's epoch: a person, not a stale run
    assert cluster.store.get("Deployment", NAMESPACE, "by-hand")["metadata"]["annotations"][EPOCH] == "1"


def test_an_object_without_the_group_label_is_not_fenced(
    cluster: SandboxCluster, worker: ApiClient, admin: ApiClient
) -> None:
    make_group(admin, "unlabelled", 9)
    make_object(admin, "unlabelled", None, 9)
    write(worker, "unlabelled", 1)


def test_only_the_objects_own_group_fences_it(worker: ApiClient, admin: ApiClient) -> None:
    make_group(admin, "mine", 3)
    make_group(admin, "theirs", 50)  # another group of the namespace, far ahead
    make_object(admin, "mine-app", "mine", 1)
    write(worker, "mine-app", 3)
    make_object(admin, "mine-app-2", "mine", 1)
    assert fenced(write, worker, "mine-app-2", 2).startswith(
        "fenced: epoch 2 is below the fence 3 of FailoverGroup mine"
    )


def test_without_any_failover_group_in_the_namespace_the_policy_is_skipped(
    cluster: SandboxCluster, worker: ApiClient, admin: ApiClient
) -> None:
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": "lonely"}})
    body = deployment("app", labels={GROUP_LABEL: "gone"})
    body["metadata"]["annotations"] = {EPOCH: "7"}
    apps = client.AppsV1Api(admin)
    apps.create_namespaced_deployment("lonely", body)
    # paramRef's parameterNotFoundAction is Allow: with no params even the old-epoch check is skipped
    client.AppsV1Api(worker).patch_namespaced_deployment(
        "app", "lonely", {"metadata": {"annotations": {EPOCH: "1"}}}
    )


def test_creates_and_deletes_are_not_fenced(
    cluster: SandboxCluster, worker: ApiClient, admin: ApiClient
) -> None:
    make_group(admin, "lifecycle", 9)
    body = deployment("lifecycle", labels={GROUP_LABEL: "lifecycle"})
    body["metadata"]["annotations"] = {EPOCH: "1"}
    apps = client.AppsV1Api(worker)
    apps.create_namespaced_deployment(NAMESPACE, body)
    apps.delete_namespaced_deployment("lifecycle", NAMESPACE)


@pytest.mark.parametrize("who", ["worker", "admin"])
def test_a_fence_grows_or_stays_but_never_shrinks_or_goes(
    cluster: SandboxCluster, who: str, worker: ApiClient, admin: ApiClient
) -> None:
    api = worker if who == "worker" else admin
    name = f"fence-{who}"
    make_group(admin, name, 5)
    objects = client.CustomObjectsApi(api)

    def set_fence(value: int | None) -> None:
        patch = {"metadata": {"annotations": {FENCE: None if value is None else str(value)}}}
        objects.patch_namespaced_custom_object(CRD_GROUP, VERSION, NAMESPACE, "failovergroups", name, patch)

    set_fence(6)
    set_fence(6)
    assert fenced(set_fence, 4) == f"fenced: the fence of FailoverGroup {name} only grows (6 -> 4 refused)"
    assert fenced(set_fence, None) == f"fenced: the fence of FailoverGroup {name} only grows (6 -> 0 refused)"
    set_fence(7)
    group = cluster.store.get("FailoverGroup", NAMESPACE, name)
    assert group["metadata"]["annotations"][FENCE] == "7"
