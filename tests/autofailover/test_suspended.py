"""A suspended group gets no automatic Failover, in the same setting as the end-to-end test."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fsm.autofailover import LABEL_AUTOMATIC, Action
from tests.autofailover.conftest import SHOP, World

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def group_spec() -> dict[str, Any]:
    return {"suspended": True, "suspensionReason": "maintenance window"}


def test_a_suspended_group_gets_no_automatic_failover_when_its_site_is_lost(world: World) -> None:
    coordination = world.coordination
    world.checker.start()
    deadline = time.monotonic() + 10
    while {b.cluster for b in coordination.heartbeats(SHOP)} != {"site-a", "site-b"}:
        assert time.monotonic() < deadline, "no heartbeats"
        time.sleep(0.1)

    world.fleet["site-a"].set_down(True)
    time.sleep(4.5)  # site-a's heartbeat is now well past timeouts.heartbeat (3 s)
    [outcome] = world.checker.run_once()

    assert outcome.decision.action is Action.HEARTBEAT
    assert "no heartbeat from the active cluster site-a" in outcome.decision.reason
    assert "the group is suspended (maintenance window): no automatic failover" in outcome.decision.reason
    assert outcome.decision.failover is None and outcome.created is None
    for cluster in world.fleet:
        items, _ = cluster.store.list("Failover", "shop", label_selector=f"{LABEL_AUTOMATIC}=true")
        assert items == [], cluster.name
    assert coordination.active_cluster(SHOP) == "site-a"
    assert world.orchestrator.runs(limit=10) == []
