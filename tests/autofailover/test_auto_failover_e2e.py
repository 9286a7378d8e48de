"""A site goes dark and comes back: the health checker fails its group over automatically (force),
the watcher submits the Failover, a real worker runs it skipping the lost site's steps; when the site
answers again still holding active objects, the checker stands it down and the worker makes it
passive. No second automatic Failover is created (cool-down)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from fsm.autofailover import LABEL_AUTOMATIC, Action
from fsm.run import RunStatus
from producers.health import GroupOutcome
from sandbox.kube import SandboxFleet
from tests.autofailover.conftest import SHOP, World
from tests.kube.invariants import not_ready, snapshot, stood_down

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

T = TypeVar("T")


def wait_until(world: World, predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s\nworker log:\n{world.worker_log()}")


def automatic_failovers(fleet: SandboxFleet) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for cluster in fleet:
        items, _ = cluster.store.list("Failover", "shop", label_selector=f"{LABEL_AUTOMATIC}=true")
        found.extend((cluster.name, item) for item in items)
    return found


def assert_passive(fleet: SandboxFleet, cluster: str) -> None:
    """Every object of the group on ``cluster`` stood down, read from its API server's store."""
    objects = snapshot(fleet[cluster], "shop")
    assert sorted(stood_down(objects)) == sorted(f"{kind} {name}" for kind, name in objects)
    for (kind, name), obj in objects.items():
        status = obj.get("status") or {}
        if kind in ("Deployment", "StatefulSet"):
            assert not status.get("readyReplicas") and not status.get("replicas"), (kind, name, status)
        if kind == "VolumeReplication":
            assert status["state"].lower() == "secondary", (name, status)


def test_a_lost_site_is_failed_over_automatically_and_stood_down_when_it_returns(world: World) -> None:
    fleet, coordination = world.fleet, world.coordination
    outcomes: list[GroupOutcome] = []
    started = time.monotonic()
    world.watcher.start()
    world.checker.start()

    # Heartbeats flow for both sites.
    wait_until(
        world,
        lambda: {b.cluster for b in coordination.heartbeats(SHOP)} == {"site-a", "site-b"},
        10,
        "heartbeats",
    )
    assert automatic_failovers(fleet) == []

    fleet["site-a"].set_down(True)

    # Exactly one automatic Failover, created once site-a's heartbeat is stale (3 s), on site-b.
    [(where, failover)] = wait_until(world, lambda: automatic_failovers(fleet), 15, "an automatic Failover")
    assert where == "site-b"
    spec = failover["spec"]
    assert (spec["targetCluster"], spec["failoverMode"], spec["force"]) == ("site-b", "UPTIME", True)
    assert "no heartbeat from the active cluster site-a" in spec["reason"]
    # Not before site-a's last heartbeat (none is written while it is down) was 3 s old.
    [last_beat] = [b for b in coordination.heartbeats(SHOP) if b.cluster == "site-a"]
    assert time.time() - last_beat.at > 3

    # The watcher submits it, the worker runs it: site-b ends active, site-a's steps skipped.
    def finished() -> Any:
        runs = [r for r in world.orchestrator.runs(limit=20) if r.target_cluster == "site-b" and r.force]
        return runs[0] if runs and runs[0].terminal else None

    run = wait_until(world, finished, 30, "the automatic run to finish")
    assert run.status is RunStatus.SUCCESS, run.message
    assert run.source_cluster == "site-a"
    skipped = run.skipped()
    assert skipped and all("site-a" in line for line in skipped), skipped
    assert coordination.active_cluster(SHOP) == "site-b"
    [record] = [h for h in coordination.history(SHOP) if h.run_id == run.run_id]
    assert (record.outcome, record.force, record.target_cluster) == ("SUCCESS", True, "site-b")
    assert record.skipped == tuple(skipped)
    site_b = snapshot(fleet["site-b"], "shop")
    assert not_ready(site_b) == []
    # site-a was never reached: it still holds its active objects.
    assert stood_down(snapshot(fleet["site-a"], "shop")) == []

    # site-a answers again: the checker sees it active for a group it no longer owns and stands it down.
    fleet["site-a"].set_down(False)

    def stood_down_record() -> Any:
        return next((h for h in coordination.history(SHOP) if h.outcome == "STOOD_DOWN"), None)

    standdown = wait_until(world, stood_down_record, 30, "a STOOD_DOWN record")
    assert standdown.source_cluster == "site-a" and standdown.target_cluster == "site-b"
    assert standdown.mode == "STANDDOWN"  # its own kind of run, not a CONSISTENCY failover
    assert "site-a made passive" in standdown.message
    assert "came back holding active objects" in standdown.reason
    assert "Deployment/web" in standdown.reason  # names what was found active
    assert "scale_down_workloads" in standdown.message  # and what changed
    assert_passive(fleet, "site-a")
    # site-b kept serving throughout the stand-down, and stays the owner.
    assert not_ready(snapshot(fleet["site-b"], "shop")) == []
    assert coordination.active_cluster(SHOP) == "site-b"

    # A few more passes: no second automatic Failover (cool-down), no second stand-down.
    time.sleep(1.5)
    outcomes.extend(world.checker.run_once())
    assert len(automatic_failovers(fleet)) == 1
    assert [h.outcome for h in coordination.history(SHOP)].count("STOOD_DOWN") == 1
    assert [o.decision.action for o in outcomes] == [Action.HEARTBEAT]
    assert not any(d.stand_down for o in outcomes for d in o.stand_downs)
    assert coordination.lock_info(SHOP) is None
    assert time.monotonic() - started < 60
