"""The producers' client retries what may pass a moment later, and nothing that did not connect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.kube import FAILOVER_GROUPS, ClusterClient
from sandbox.kube import SandboxFleet, load_sample_fleet
from workers.errors import ClusterUnreachable, TemporaryError

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[SandboxFleet]:
    with SandboxFleet(["site-a"], kubeconfig_path=tmp_path / "kubeconfig", run_controllers=False) as started:
        load_sample_fleet(started, active="site-a")
        yield started


@pytest.fixture
def site_a(fleet: SandboxFleet) -> Iterator[ClusterClient]:
    made = ClusterClient.from_kubeconfig(fleet.kubeconfig_for("watcher"), "site-a", request_timeout=1.0)
    yield made
    made.close()


def test_5xx_and_short_throttling_are_retried(fleet: SandboxFleet, site_a: ClusterClient) -> None:
    fleet["site-a"].faults.fail_next(1, 503)
    fleet["site-a"].faults.fail_next(1, 429)
    fleet["site-a"].faults.drop_next(1, "reset")
    groups, _ = site_a.list(FAILOVER_GROUPS, "shop")
    assert [g["metadata"]["name"] for g in groups] == ["shop"]


def test_retries_end_and_the_last_answer_is_translated(fleet: SandboxFleet, site_a: ClusterClient) -> None:
    fleet["site-a"].faults.fail_next(10, 500)
    with pytest.raises(TemporaryError, match="500"):
        site_a.list(FAILOVER_GROUPS, "shop")


def test_a_site_that_refuses_connections_is_reported_at_once(
    fleet: SandboxFleet, site_a: ClusterClient
) -> None:
    site_a.list(FAILOVER_GROUPS, "shop")
    fleet["site-a"].set_down(True)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable):
        site_a.list(FAILOVER_GROUPS, "shop")
    assert time.monotonic() - started < 1.0
