"""Fixtures for the Kubernetes adapter tests: two sandbox clusters holding the sample group "shop"
(active on site-a, passive on site-b), and the adapter's clients pointed at them through kubeconfig."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fsm.models import ResourceRef
from sandbox.kube import SandboxCluster, SandboxFleet, load_sample_fleet
from workers.kube import KubeClients, KubeEffects

# Short controller delays: fast tests that still pass through every intermediate status.
FAST: dict[str, Any] = {
    "tick": 0.01,
    "workload_delay": 0.05,
    "replica_step": 0.02,
    "volume_delay": 0.05,
    "volume_resync_delay": 0.1,
    "flux_delay": 0.05,
    "job_duration": 0.3,
}
NAMESPACE = "shop"
T = TypeVar("T")


def ref(kind: str, name: str) -> ResourceRef:
    return ResourceRef(kind=kind, namespace=NAMESPACE, name=name)


def wait_for(probe: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s (last value: {value!r})")
        time.sleep(interval)
        value = probe()
    return value


def stored(cluster: SandboxCluster, r: ResourceRef) -> dict[str, Any]:
    """The object as the sandbox server holds it (bypassing the adapter under test)."""
    return cluster.store.get(r.kind, r.namespace, r.name)


def notes(cluster: SandboxCluster, r: ResourceRef) -> dict[str, str]:
    return stored(cluster, r)["metadata"].get("annotations") or {}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[SandboxFleet]:
    with SandboxFleet(["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig", **FAST) as started:
        load_sample_fleet(started, active="site-a")
        yield started


@pytest.fixture
def site_a(fleet: SandboxFleet) -> SandboxCluster:
    return fleet["site-a"]


@pytest.fixture
def site_b(fleet: SandboxFleet) -> SandboxCluster:
    return fleet["site-b"]


@pytest.fixture
def clients(fleet: SandboxFleet) -> Iterator[KubeClients]:
    made = KubeClients(fleet.kubeconfig_path, connect_timeout=1.0, read_timeout=3.0)
    yield made
    made.close()


@pytest.fixture
def effects(clients: KubeClients) -> KubeEffects:
    return KubeEffects(clients)
