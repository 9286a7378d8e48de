"""What the chaos scenarios assert about the clusters at the end, read from the sandbox stores."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sandbox.kube import SandboxFleet
from tests.chaos.monitor import serving
from tests.kube.invariants import primary_volumes, snapshot, stood_down

T = TypeVar("T")
VOLUMES = {"db-data", "cache-data"}


def active_clusters(fleet: SandboxFleet) -> list[str]:
    """The clusters that serve the group (workloads ready, DNS published)."""
    return [c.name for c in fleet if serving(snapshot(c, "shop"))]


def primaries(fleet: SandboxFleet) -> dict[str, set[str]]:
    return {c.name: primary_volumes(snapshot(c, "shop", ["VolumeReplication"])) for c in fleet}


def assert_only_active(fleet: SandboxFleet, active: str) -> None:
    """``active`` serves with every volume primary; every other cluster is wholly passive."""
    assert active_clusters(fleet) == [active]
    assert primaries(fleet) == {c.name: (VOLUMES if c.name == active else set()) for c in fleet}
    for cluster in fleet:
        if cluster.name == active:
            continue
        objects = snapshot(cluster, "shop")
        assert sorted(stood_down(objects)) == sorted(f"{kind} {name}" for kind, name in objects), cluster


def eventually(probe: Callable[[], T], what: str, timeout: float = 20.0, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s (last value: {value!r})")
        time.sleep(interval)
        value = probe()
    return value
