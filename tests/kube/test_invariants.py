"""The end-to-end invariant monitor catches the states it is there to catch (no servers needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.kube import SandboxCluster, load_sample_group
from tests.factories import group
from tests.kube.invariants import InvariantMonitor


@pytest.fixture
def pair() -> Iterator[tuple[SandboxCluster, SandboxCluster]]:
    """Two clusters' stores (servers and controllers never started)."""
    yield SandboxCluster("site-a", run_controllers=False), SandboxCluster("site-b", run_controllers=False)


def _violations(source: SandboxCluster, target: SandboxCluster, mode: str) -> list[str]:
    monitor = InvariantMonitor(source, target, mode, group())
    monitor.sample()
    return monitor.violations


def test_a_steady_pair_breaks_nothing(pair: tuple[SandboxCluster, SandboxCluster]) -> None:
    source, target = pair
    load_sample_group(source, active=True)
    load_sample_group(target, active=False)
    assert _violations(source, target, "CONSISTENCY") == []
    assert _violations(source, target, "UPTIME") == []


def test_two_primaries_and_an_early_scale_up_are_caught(pair: tuple[SandboxCluster, SandboxCluster]) -> None:
    source, target = pair
    load_sample_group(source, active=True)
    load_sample_group(target, active=True)
    db = target.store.get("VolumeReplication", "shop", "db-data")
    db["status"]["state"] = "Secondary"
    db["spec"]["replicationState"] = "secondary"
    target.store.put(db)
    assert _violations(source, target, "CONSISTENCY") == [
        "VolumeReplication cache-data primary on both clusters",
        "target: StatefulSet db scaled up before db-data was primary",
    ]


def test_a_source_standing_down_before_the_target_serves_is_caught(
    pair: tuple[SandboxCluster, SandboxCluster],
) -> None:
    source, target = pair
    load_sample_group(source, active=True)
    load_sample_group(target, active=False)
    ingress = source.store.get("Ingress", "shop", "web")
    ingress["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/controller"] = "ignore"
    source.store.put(ingress)
    [violation] = _violations(source, target, "UPTIME")
    assert violation.startswith("source stood down (Ingress web) while target not ready (")
    load_sample_group(target, active=True)
    assert _violations(source, target, "UPTIME") == []
