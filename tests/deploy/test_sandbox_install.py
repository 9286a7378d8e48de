"""The generated CRDs installed in a sandbox cluster with the kubernetes client, the sample objects
created under them, status written through the subresource, and kubectl showing the printer columns.

(The sandbox serves the kinds a CRD declares and enforces its CEL rules, not the rest of its schema;
the schemas themselves are checked by test_crds.py, the rules by tests/sandbox/test_crd_validation.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from sandbox.kube import SandboxCluster, write_kubeconfig
from tests.deploy.helpers import DEPLOY, ROOT, load_documents

pytestmark = pytest.mark.integration

GROUP, VERSION = "crd.hahomelabs.com", "v1alpha1"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[SandboxCluster, Path]]:
    # kubectl over plain HTTP sends no bearer token (it arrives as system:anonymous): no RBAC here.
    with SandboxCluster(
        "site-a", preinstall_crds=False, run_controllers=False, install_rbac=False
    ) as started:
        yield started, write_kubeconfig([started], tmp_path / "kubeconfig")


@pytest.fixture
def api(cluster: tuple[SandboxCluster, Path]) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(cluster[1]), context="site-a")
    try:
        yield api_client
    finally:
        api_client.close()


def _crds() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "crds").glob("*_*.yaml")) for doc in load_documents(path)]


def test_the_crds_install_and_the_samples_are_accepted(
    api: client.ApiClient, cluster: tuple[SandboxCluster, Path], tmp_path: Path
) -> None:
    extensions = client.ApiextensionsV1Api(api)
    for crd in _crds():
        extensions.create_custom_resource_definition(body=crd)
    installed = {item.metadata.name for item in extensions.list_custom_resource_definition().items}
    assert installed == {"failovers.crd.hahomelabs.com", "failovergroups.crd.hahomelabs.com"}

    client.CoreV1Api(api).create_namespace(body={"metadata": {"name": "shop"}})
    objects = client.CustomObjectsApi(api)
    (group,) = [
        d for d in load_documents(ROOT / "sandbox" / "samples" / "shop.yaml") if d["kind"] == "FailoverGroup"
    ]
    (failover,) = load_documents(DEPLOY / "examples" / "failover.yaml")
    del group["spec"]["suspended"]  # the API server defaults it (the SUSPENDED column below)
    objects.create_namespaced_custom_object(GROUP, VERSION, "shop", "failovergroups", group)
    objects.create_namespaced_custom_object(GROUP, VERSION, "shop", "failovers", failover)
    objects.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "shop",
        "failovers",
        failover["metadata"]["name"],
        {"status": {"status": "IN_PROGRESS", "state": "SCALING_DOWN_WORKLOADS", "message": "moving"}},
    )
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, "shop", "failovers", "move-shop-to-site-b")
    assert stored["spec"] == {**failover["spec"], "force": False, "dryRun": False}  # schema defaults
    assert stored["status"]["state"] == "SCALING_DOWN_WORKLOADS"

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: printer columns not checked")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": str(cluster[1])}

    def get(*args: str) -> list[list[str]]:
        result = subprocess.run(
            [kubectl, "get", *args, "-n", "shop"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return [line.split() for line in result.stdout.splitlines()]

    header, row = get("fo")  # the short name
    assert header == ["NAME", "STATUS", "STATE", "TARGET", "MODE", "AGE"]
    assert row[:5] == [
        "move-shop-to-site-b",
        "IN_PROGRESS",
        "SCALING_DOWN_WORKLOADS",
        "site-b",
        "CONSISTENCY",
    ]
    header, row = get("fg")
    assert header == ["NAME", "HEALTH", "SUSPENDED", "ACTIVE", "AGE"]
    # Health is the status the watcher writes (no watcher runs here); SUSPENDED is spec.suspended,
    # omitted from the group above and defaulted to false by the API server.
    assert row[:3] == ["shop", "<none>", "false"]
