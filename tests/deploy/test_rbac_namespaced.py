"""deploy/rbac-namespaced: the same permissions as deploy/rbac, but every write only in the group
namespaces. Built with kubectl's kustomize (deploy/examples/rbac-namespaced), loaded into a sandbox
cluster and checked with its RBAC authorizer, offline."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.kube import SandboxCluster
from sandbox.kube.identity import UserInfo, Users
from sandbox.kube.rbac import Request
from tests.deploy.helpers import DEPLOY
from tests.deploy.test_manifests import RULES

GROUP_NAMESPACE = "shop"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    home = tmp_path_factory.mktemp("home")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "examples" / "rbac-namespaced")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture
def cluster(built: list[dict[str, Any]]) -> Iterator[SandboxCluster]:
    with SandboxCluster("ns-rbac", run_controllers=False, install_rbac=False) as started:
        for doc in built:
            started.store.put(doc)
        started.authorizer.enabled = True
        yield started


def _user(component: str) -> UserInfo:
    users = Users()
    found = users.authenticate(f"Bearer {users.token(component)}")
    assert found is not None
    return found


def test_no_write_is_bound_cluster_wide(built: list[dict[str, Any]]) -> None:
    roles = {d["metadata"]["name"]: d for d in built if d["kind"] == "ClusterRole"}
    bound = {d["roleRef"]["name"] for d in built if d["kind"] == "ClusterRoleBinding"}
    assert "failover-orchestrator-worker" not in bound
    for name in bound - {"failover-orchestrator-operator"}:
        for rule in roles[name]["rules"]:
            assert not set(rule["verbs"]) & WRITES, (name, rule)


@pytest.mark.parametrize("component", ["worker", "watcher", "health-checker"])
def test_each_component_keeps_its_grants_in_the_group_namespace_only(
    cluster: SandboxCluster, component: str
) -> None:
    user = _user(component)
    for (group, resource), verbs in RULES[f"failover-orchestrator-{component}"].items():
        plural, _, sub = resource.partition("/")
        for verb in verbs:
            names = [None] if verb in ("list", "watch", "create") else ["x"]
            for name in names:
                here = Request(verb, group, plural, sub or None, GROUP_NAMESPACE, name)
                elsewhere = Request(verb, group, plural, sub or None, "other-app", name)
                assert cluster.authorizer.allows(user, here), (component, verb, resource)
                if verb in WRITES:
                    assert not cluster.authorizer.allows(user, elsewhere), (component, verb, resource)
    # Nothing beyond deploy/rbac: a verb no role grants stays refused in the group namespace.
    assert not cluster.authorizer.allows(user, Request("delete", "apps", "deployments", None, "shop", "x"))


def test_the_component_is_documented_in_the_kustomization() -> None:
    text = (DEPLOY / "rbac-namespaced" / "kustomization.yaml").read_text()
    assert "kind: Component" in text
    assert Path(DEPLOY / "rbac-namespaced" / "roles.yaml").exists()
