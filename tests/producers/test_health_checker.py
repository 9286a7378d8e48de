"""The health checker against two sandbox clusters and a moto DynamoDB; time is passed in as ``now``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from fsm.autofailover import LABEL_AUTOMATIC, Action
from fsm.models import LABEL_GROUP
from producers.health import HealthChecker
from producers.kube import ClusterClient
from producers.watcher import FailoverWatcher
from sandbox.kube import SandboxFleet
from tests.producers.conftest import SHOP
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination

pytestmark = pytest.mark.integration


def automatic_failovers(fleet: SandboxFleet) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for cluster in fleet:
        items, _ = cluster.store.list("Failover", "shop", label_selector=f"{LABEL_AUTOMATIC}=true")
        found.extend((cluster.name, item) for item in items)
    return found


def set_suspended(
    fleet: SandboxFleet, suspended: bool, clusters: tuple[str, ...] = ("site-a", "site-b")
) -> None:
    for name in clusters:
        cluster = fleet[name]
        group = cluster.store.get("FailoverGroup", "shop", "shop")
        group["spec"]["suspended"] = suspended
        group["spec"]["suspensionReason"] = "maintenance window"
        cluster.store.put(group)


def test_heartbeats_are_written_for_every_cluster_that_answers(
    fleet: SandboxFleet, checker: HealthChecker, coordination: DynamoCoordination
) -> None:
    now = time.time()

    [outcome] = checker.run_once(now)

    assert outcome.decision.action is Action.HEARTBEAT
    assert "site-a is OK" in outcome.decision.reason
    beats = {b.cluster: b for b in coordination.heartbeats(SHOP)}
    assert {(c, b.health, b.role, b.at) for c, b in beats.items()} == {
        ("site-a", "OK", "PRIMARY", now),
        ("site-b", "OK", "STANDBY", now),
    }
    assert beats["site-a"].resources["Deployment/web"] == "OK: 3/3 ready"
    assert beats["site-b"].resources["VolumeReplication/db-data"] == "OK: secondary"

    fleet["site-b"].set_down(True)
    checker.run_once(now + 30)

    beats = {b.cluster: b for b in coordination.heartbeats(SHOP)}
    assert (beats["site-a"].at, beats["site-b"].at) == (now + 30, now)  # no heartbeat for a silent cluster
    # The gauge an alert reads: site-b's heartbeat was 30 s old when the checker looked.
    from prometheus_client import REGISTRY

    labels = {"group": f"{SHOP.namespace}/{SHOP.name}", "cluster": "site-b"}
    age = REGISTRY.get_sample_value("failover_cluster_heartbeat_age_seconds", labels)
    assert age == 30.0


def test_a_stale_active_cluster_gets_one_automatic_failover_that_the_watcher_submits(
    fleet: SandboxFleet,
    checker: HealthChecker,
    make_watcher: Callable[..., FailoverWatcher],
    orchestrator: Orchestrator,
) -> None:
    now = time.time()
    checker.run_once(now)
    fleet["site-a"].set_down(True)

    [early] = checker.run_once(now + 30)
    assert early.decision.action is Action.HEARTBEAT and automatic_failovers(fleet) == []

    [outcome] = checker.run_once(now + 61)

    assert outcome.decision.action is Action.FAILOVER
    assert outcome.created_in == "site-b"
    [(cluster, obj)] = automatic_failovers(fleet)
    assert cluster == "site-b" and obj["metadata"]["name"].startswith("auto-shop-")
    assert obj["metadata"]["labels"] == {LABEL_AUTOMATIC: "true", LABEL_GROUP: "shop"}
    spec = obj["spec"]
    assert (spec["targetCluster"], spec["failoverMode"], spec["force"]) == ("site-b", "UPTIME", True)
    assert spec["reason"].startswith("automatic failover by the health checker: no heartbeat from the active")
    assert "timeouts.heartbeat is 60s" in spec["reason"]

    [again] = checker.run_once(now + 62)
    assert again.decision.action is Action.HEARTBEAT and "already in flight" in again.decision.reason
    assert len(automatic_failovers(fleet)) == 1

    decision = make_watcher().handle("site-b", obj)
    assert decision.action.value == "submit"
    [run] = orchestrator.runs(failover=f"shop/{obj['metadata']['name']}")
    assert (run.source_cluster, run.target_cluster, run.force) == ("site-a", "site-b", True)
    assert run.failover_cluster == "site-b"  # where the Failover lives: its status is written there


@pytest.mark.parametrize("suspended_on", [("site-a", "site-b"), ("site-b",)], ids=["everywhere", "one copy"])
def test_a_suspended_group_is_never_failed_over_automatically(
    fleet: SandboxFleet, checker: HealthChecker, suspended_on: tuple[str, ...]
) -> None:
    now = time.time()
    set_suspended(fleet, True, suspended_on)
    checker.run_once(now)
    fleet["site-a"].set_down(True)

    [outcome] = checker.run_once(now + 120)

    assert outcome.decision.action is Action.HEARTBEAT
    assert "suspended (maintenance window)" in outcome.decision.reason
    assert automatic_failovers(fleet) == []


def test_no_second_automatic_failover_within_the_cool_down(
    fleet: SandboxFleet, checker: HealthChecker
) -> None:
    now = time.time()
    checker.run_once(now)
    fleet["site-a"].set_down(True)
    [first] = checker.run_once(now + 61)
    assert first.created is not None
    # That Failover failed (say, rejected): it is no longer in flight, but the cool-down holds.
    failed = fleet["site-b"].store.get("Failover", "shop", first.created)
    failed["status"] = {"status": "FAILED"}
    fleet["site-b"].store.put(failed)

    [within] = checker.run_once(now + 61 + 299)
    assert within.decision.action is Action.HEARTBEAT and "cool-down 300s" in within.decision.reason

    [after] = checker.run_once(now + 61 + 301)
    assert after.decision.action is Action.FAILOVER and after.created not in (None, first.created)
    assert len(automatic_failovers(fleet)) == 2


def test_an_active_cluster_in_error_fails_over_after_the_unhealthy_primary_timeout(
    fleet: SandboxFleet, checker: HealthChecker
) -> None:
    fleet["site-a"].controllers.stop()  # keep the simulated controller from repairing the workload
    deployment = fleet["site-a"].store.get("Deployment", "shop", "web")
    deployment["status"].update(readyReplicas=0, availableReplicas=0)
    fleet["site-a"].store.put(deployment)
    now = time.time()

    [first] = checker.run_once(now)
    assert first.decision.action is Action.HEARTBEAT and "reports ERROR" in first.decision.reason
    [second] = checker.run_once(now + 119)
    assert second.decision.action is Action.HEARTBEAT

    [third] = checker.run_once(now + 120)

    assert third.decision.action is Action.FAILOVER
    [(_, obj)] = automatic_failovers(fleet)
    assert obj["spec"]["force"] is False
    assert "has reported ERROR for 120s (timeouts.unhealthyPrimary is 120s)" in obj["spec"]["reason"]


def test_the_checker_runs_in_the_background_and_stops(
    fleet: SandboxFleet, checker: HealthChecker, coordination: DynamoCoordination
) -> None:
    checker.start()
    try:
        beats = []
        deadline = time.monotonic() + 5
        while len(beats) < 2 and time.monotonic() < deadline:
            beats = coordination.heartbeats(SHOP)
            time.sleep(0.05)
        assert {b.cluster for b in beats} == {"site-a", "site-b"}
    finally:
        started = time.monotonic()
        checker.stop()
        assert time.monotonic() - started < 2.0


def test_two_sites_checkers_deciding_the_same_failover_create_one(
    fleet: SandboxFleet,
    checker: HealthChecker,
    orchestrator: Orchestrator,
    checker_clients: dict[str, ClusterClient],
) -> None:
    other_site = HealthChecker(orchestrator, checker_clients, operator_id=checker.operator_id, cooldown=300.0)
    now = time.time()
    checker.run_once(now)
    fleet["site-a"].set_down(True)
    [mine] = checker.run_once(now + 61)
    assert mine.created is not None and mine.created.startswith("auto-shop-")
    # The other site decided the same thing from the same view, a moment before it could see ours:
    # its creation meets ours by name and is refused, so one Failover (one run) results.
    assert mine.decision.failover is not None
    theirs = other_site._create_failover(SHOP, mine.decision, {"site-a", "site-b"} - {"site-a"}, now + 61)
    assert theirs.created == mine.created
    assert len(automatic_failovers(fleet)) == 1
