"""Fixtures for the sandbox tests: a two-cluster fleet with fast controllers, API clients, kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import config
from kubernetes.client import ApiClient

from sandbox.kube import SandboxCluster, SandboxFleet

# Short delays keep controller tests quick while still leaving distinct intermediate states.
FAST = {
    "tick": 0.01,
    "workload_delay": 0.05,
    "replica_step": 0.0,
    "volume_delay": 0.05,
    "volume_resync_delay": 0.1,
    "flux_delay": 0.05,
    "job_duration": 0.3,
}

ClientFactory = Callable[[str], ApiClient]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[SandboxFleet]:
    # These tests exercise the API server's mechanics with the worker's token on any kind: RBAC off
    # (test_rbac.py covers it, with deploy/rbac installed).
    with SandboxFleet(
        ["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig", install_rbac=False, **FAST
    ) as started:
        yield started


@pytest.fixture
def site_a(fleet: SandboxFleet) -> SandboxCluster:
    return fleet["site-a"]


@pytest.fixture
def still(site_a: SandboxCluster) -> SandboxCluster:
    """site-a with its controllers paused, for exact API semantics without status writers."""
    site_a.controllers.paused = True
    return site_a


@pytest.fixture
def clients(fleet: SandboxFleet) -> Iterator[ClientFactory]:
    """``clients("site-a")``: an ApiClient from the generated kubeconfig, closed after the test."""
    made: list[ApiClient] = []

    def make(context: str) -> ApiClient:
        api = config.new_client_from_config(config_file=str(fleet.kubeconfig_path), context=context)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api(clients: ClientFactory) -> ApiClient:
    return clients("site-a")


@pytest.fixture
def kubectl(fleet: SandboxFleet, tmp_path: Path) -> Kubectl:
    """Run kubectl against the fleet (context site-a unless ``--context`` is given)."""
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "KUBECONFIG": str(fleet.kubeconfig_path),
        "KUBECACHEDIR": str(tmp_path / "kube-cache"),
    }

    def run(
        *args: str, stdin: str | None = None, context: str = "site-a"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, "--context", context, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    return run
