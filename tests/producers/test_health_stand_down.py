"""The health checker stands down a non-owner cluster that holds active objects of a group (sandbox
clusters, moto DynamoDB, real Redis; the stand-down run is only created and enqueued here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from fsm.plan import PlanKind
from producers.health import HealthChecker
from sandbox.kube import SandboxFleet
from tests.factories import history_record
from tests.producers.conftest import SHOP
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination

pytestmark = pytest.mark.integration

DNS = "external-dns.alpha.kubernetes.io/controller"


def publish_dns(fleet: SandboxFleet, cluster: str) -> None:
    ingress = fleet[cluster].store.get("Ingress", "shop", "web")
    ingress["metadata"]["annotations"][DNS] = "dns-controller"
    fleet[cluster].store.put(ingress)


def test_a_passive_standby_and_the_owner_are_left_alone(
    checker: HealthChecker, enqueued: Callable[[], int]
) -> None:
    [outcome] = checker.run_once(time.time())

    assert outcome.stood_down == ()
    [standby] = outcome.stand_downs  # the owner site-a is not even considered
    assert (standby.cluster, standby.stand_down) == ("site-b", False)
    assert "passive as expected" in standby.reason
    assert enqueued() == 0


def test_a_non_owner_with_active_objects_is_stood_down_once(
    fleet: SandboxFleet,
    checker: HealthChecker,
    orchestrator: Orchestrator,
    enqueued: Callable[[], int],
) -> None:
    publish_dns(fleet, "site-b")

    [outcome] = checker.run_once(time.time())

    [decision] = outcome.stand_downs
    assert decision.stand_down and "Ingress/web: DNS published" in decision.reason
    [run_id] = outcome.stood_down
    run = orchestrator.run(run_id)
    assert run is not None
    assert (run.kind, run.source_cluster, run.target_cluster) == (PlanKind.STANDDOWN, "site-b", "site-a")
    assert "Ingress/web: DNS published" in run.reason
    assert enqueued() == 1

    # Asked again in the same ownership epoch: the same run, nothing new is enqueued.
    [again] = checker.run_once(time.time())
    assert again.stand_downs[0].stand_down and again.stood_down == ()
    assert enqueued() == 1


def test_no_stand_down_while_a_run_holds_the_lock(
    fleet: SandboxFleet,
    checker: HealthChecker,
    coordination: DynamoCoordination,
    enqueued: Callable[[], int],
) -> None:
    coordination.acquire_lock(SHOP, holder="test", run_id="run-in-flight", lease_seconds=60, now=time.time())
    publish_dns(fleet, "site-b")

    [outcome] = checker.run_once(time.time())

    [decision] = outcome.stand_downs
    assert not decision.stand_down and "run run-in-flight holds the group's lock" in decision.reason
    assert outcome.stood_down == () and enqueued() == 0


def test_a_lock_whose_lease_ran_out_does_not_block_a_stand_down(
    fleet: SandboxFleet,
    checker: HealthChecker,
    coordination: DynamoCoordination,
    enqueued: Callable[[], int],
) -> None:
    now = time.time()
    coordination.acquire_lock(SHOP, holder="test", run_id="run-that-died", lease_seconds=60, now=now - 600)
    publish_dns(fleet, "site-b")

    [outcome] = checker.run_once(now)

    assert [d.stand_down for d in outcome.stand_downs] == [True]
    assert len(outcome.stood_down) == 1 and enqueued() == 1


def test_the_only_serving_site_is_never_stood_down_and_the_group_is_diverged(
    fleet: SandboxFleet,
    checker: HealthChecker,
    coordination: DynamoCoordination,
    enqueued: Callable[[], int],
) -> None:
    """DynamoDB names site-a, but site-a serves nothing (a run failed past its point of no return) and
    site-b serves: standing site-b down would leave no site at all."""
    publish_dns(fleet, "site-b")
    web = fleet["site-a"].store.get("Deployment", "shop", "web")
    web["spec"]["replicas"] = 0
    fleet["site-a"].store.put(web)

    [outcome] = checker.run_once(time.time())

    [decision] = outcome.stand_downs
    assert not decision.stand_down and decision.diverged
    assert "owner site-a does not serve" in decision.reason
    assert outcome.stood_down == () and enqueued() == 0
    divergence = coordination.divergence(SHOP)
    assert divergence is not None and "site-a does not serve" in divergence.reason
    assert "site-b: " in divergence.detail and "Ingress/web: DNS published" in divergence.detail

    # While diverged, nothing automatic happens, whatever the clusters look like.
    [again] = checker.run_once(time.time())
    assert not again.stand_downs[0].stand_down and "the group is diverged" in again.stand_downs[0].reason
    assert enqueued() == 0


def test_no_stand_down_on_a_read_older_than_the_groups_latest_history_record(
    fleet: SandboxFleet,
    checker: HealthChecker,
    coordination: DynamoCoordination,
    enqueued: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI, 2026-12-07 03:03: a pass read the returning site still demoting its volumes while the first
    stand-down was finishing; by the time it asked, that run had written its STOOD_DOWN record, which
    named a new epoch, and a second stand-down ran. Here a run's record lands between the checker's
    read of the clusters and its ask: nothing is started on that read; the next pass reads again."""
    publish_dns(fleet, "site-b")
    observe = checker._observe

    def observe_while_a_run_finishes(*args: Any, **kwargs: Any) -> Any:
        seen = observe(*args, **kwargs)
        coordination.record_history(
            SHOP,
            history_record(
                run_id="standdown-that-finished",
                mode="STANDDOWN",
                source_cluster="site-b",
                target_cluster="site-a",
                reason="came back holding active objects",
                outcome="STOOD_DOWN",
                message="site-b made passive",
            ),
        )
        return seen

    monkeypatch.setattr(checker, "_observe", observe_while_a_run_finishes)
    [outcome] = checker.run_once(time.time())
    assert [d.stand_down for d in outcome.stand_downs] == [True]  # what the stale read showed
    assert outcome.stood_down == () and enqueued() == 0

    monkeypatch.undo()  # the next pass: site-b still publishes DNS (nothing here stood it down)
    [again] = checker.run_once(time.time())
    assert len(again.stood_down) == 1 and enqueued() == 1
