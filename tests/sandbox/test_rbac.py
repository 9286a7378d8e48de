"""The sandbox's RBAC authorizer: deploy/rbac installed by default and enforced per identity, with the
real authorizer's semantics (namespaced RoleBindings, subresources, resourceNames, system:masters)
and its 403 message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster
from sandbox.kube.identity import UserInfo
from sandbox.kube.rbac import Request

GROUP, VERSION = "crd.hahomelabs.com", "v1alpha1"


@pytest.fixture
def cluster() -> Iterator[SandboxCluster]:
    with SandboxCluster("rbac", run_controllers=False) as started:
        yield started


def forbidden(call: object) -> str:
    with pytest.raises(ApiException) as caught:
        call()  # type: ignore[operator]
    assert caught.value.status == 403
    return str(caught.value.body)


def test_each_component_gets_its_role_and_a_denial_reads_like_a_real_server(cluster: SandboxCluster) -> None:
    watcher = client.CustomObjectsApi(cluster.api_client("watcher"))
    assert watcher.list_cluster_custom_object(GROUP, VERSION, "failovers")["items"] == []
    body = forbidden(
        lambda: client.AppsV1Api(cluster.api_client("watcher")).patch_namespaced_deployment(
            "web", "shop", {"spec": {"replicas": 0}}
        )
    )
    assert (
        'deployments.apps \\"web\\" is forbidden: User \\"system:serviceaccount:failover-orchestrator:'
        'failover-watcher\\" cannot patch resource \\"deployments\\" in API group \\"apps\\" in the '
        'namespace \\"shop\\"'
    ) in body
    body = forbidden(lambda: client.CoreV1Api(cluster.api_client("worker")).list_namespaced_event("shop"))
    assert 'cannot list resource \\"events\\" in API group \\"\\" in the namespace \\"shop\\"' in body
    assert client.CoreV1Api(cluster.api_client("admin")).list_namespaced_event("shop").items == []
    used = cluster.used("watcher")
    assert [(u.verb, u.resource, u.namespace) for u in used] == [("list", "failovers", "")]


def _namespaced_grant(cluster: SandboxCluster, rules: list[dict[str, object]]) -> str:
    token = cluster.add_user("jane@example.com", ["ops", "system:authenticated"], alias="jane")
    cluster.store.put(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "r", "namespace": "shop"},
            "rules": rules,
        }
    )
    cluster.store.put(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "b", "namespace": "shop"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "Group", "name": "ops"}],
        }
    )
    return token


def test_rolebindings_grant_in_their_namespace_only_with_subresources_and_names(
    cluster: SandboxCluster,
) -> None:
    _namespaced_grant(
        cluster,
        [
            {"apiGroups": [GROUP], "resources": ["failovers/status"], "verbs": ["patch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": ["web"]},
        ],
    )
    jane = UserInfo("jane@example.com", ("ops", "system:authenticated"))
    allows = cluster.authorizer.allows

    def req(verb: str, resource: str, sub: str | None, ns: str | None, name: str | None) -> Request:
        group = "apps" if resource == "deployments" else GROUP
        return Request(verb, group, resource, sub, ns, name)

    assert allows(jane, req("patch", "failovers", "status", "shop", "f"))
    assert not allows(jane, req("patch", "failovers", None, "shop", "f"))  # the object is not its status
    assert not allows(jane, req("patch", "failovers", "status", "other", "f"))  # another namespace
    assert not allows(jane, req("patch", "failovers", "status", None, None))  # cluster scope
    assert allows(jane, req("get", "deployments", None, "shop", "web"))
    assert not allows(jane, req("get", "deployments", None, "shop", "db"))
    assert not allows(jane, req("list", "deployments", None, "shop", None))  # names never match a list
    assert allows(UserInfo("root", ("system:masters",)), req("delete", "deployments", None, "x", "y"))


def test_rbac_can_be_turned_off_and_uses_are_still_recorded() -> None:
    with SandboxCluster("open", run_controllers=False, install_rbac=False) as cluster:
        assert cluster.store.list("ClusterRole")[0] == []
        client.CoreV1Api(cluster.api_client("worker")).list_namespaced_event("shop")
        assert [(u.verb, u.resource) for u in cluster.used("worker")] == [("list", "events")]
