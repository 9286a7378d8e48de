"""The watcher adopts a user's own group by itself when the clusters say so without doubt (exactly one
active, every other passive, no owner recorded), with the same compare-and-set as ``failoverctl group
adopt`` and an ADOPTED history record by "watcher"; otherwise the FailoverGroup gets ``Adopted=False``
with what each cluster holds and the command to run. Sandbox clusters, moto DynamoDB, real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from producers.watcher import FailoverWatcher
from sandbox.kube import SandboxFleet
from tests import payments
from tests.payments import PAYMENTS
from workers.dynamo import DynamoCoordination

pytestmark = pytest.mark.integration

MakeWatcher = Callable[..., FailoverWatcher]


def adopted_condition(fleet: SandboxFleet, cluster: str) -> dict[str, Any]:
    obj = fleet[cluster].store.get("FailoverGroup", "payments", "payments")
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Adopted"]
    assert len(found) == 1, obj.get("status")
    return found[0]


def test_a_new_group_with_a_clean_state_is_adopted(
    fleet: SandboxFleet, coordination: DynamoCoordination, make_watcher: MakeWatcher
) -> None:
    payments.load_fleet(fleet, active="site-a")
    watcher = make_watcher(operator_id=payments.OPERATOR)
    watcher.sync_group_statuses("site-b")
    assert coordination.active_cluster(PAYMENTS) == "site-a"
    [record] = coordination.history(PAYMENTS)
    assert (record.outcome, record.target_cluster, record.actor) == ("ADOPTED", "site-a", "watcher")
    assert "site-a: ACTIVE (active: Deployment/api" in record.message
    assert "site-b: PASSIVE (passive: Deployment/api" in record.message
    watcher.sync_group_statuses("site-a")
    for cluster in ("site-a", "site-b"):
        condition = adopted_condition(fleet, cluster)
        assert (condition["status"], condition["reason"]) == ("True", "Adopted"), condition
        assert "site-a is the recorded active cluster" in condition["message"]
        status = fleet[cluster].store.get("FailoverGroup", "payments", "payments")["status"]
        assert status["globalState"]["activeCluster"] == "site-a"
    assert fleet["site-a"].store.get("FailoverGroup", "payments", "payments")["status"]["health"] == "OK"
    watcher.sync_group_statuses("site-a")
    assert len(coordination.history(PAYMENTS)) == 1  # adopted once


@pytest.mark.parametrize(
    ("active", "reason", "words"),
    [
        (["site-a", "site-b"], "Ambiguous", "site-a, site-b are all active"),
        ([], "NoActiveCluster", "no cluster is active"),
    ],
)
def test_an_ambiguous_group_gets_adopted_false_with_the_command(
    *,
    fleet: SandboxFleet,
    coordination: DynamoCoordination,
    make_watcher: MakeWatcher,
    active: list[str],
    reason: str,
    words: str,
) -> None:
    for cluster in fleet:
        payments.load(cluster, active=cluster.name in active)
    watcher = make_watcher(operator_id=payments.OPERATOR)
    watcher.sync_group_statuses("site-a")
    assert coordination.active_cluster(PAYMENTS) is None
    assert coordination.history(PAYMENTS) == []
    condition = adopted_condition(fleet, "site-a")
    assert (condition["status"], condition["reason"]) == ("False", reason), condition
    message = condition["message"]
    assert words in message
    assert "`failoverctl group adopt payments/payments --active CLUSTER`" in message
    verdict = "ACTIVE" if active else "PASSIVE"
    assert f"site-a: {verdict} (" in message and f"site-b: {verdict} (" in message


def test_an_unreachable_cluster_is_never_evidence(
    fleet: SandboxFleet, coordination: DynamoCoordination, make_watcher: MakeWatcher
) -> None:
    payments.load_fleet(fleet, active="site-a")
    fleet["site-b"].faults.fail_next(1000, 503)
    watcher = make_watcher(operator_id=payments.OPERATOR)
    watcher.sync_group_statuses("site-a")
    assert coordination.active_cluster(PAYMENTS) is None
    condition = adopted_condition(fleet, "site-a")
    assert (condition["status"], condition["reason"]) == ("False", "Unreachable"), condition
    assert "site-b could not be read" in condition["message"]
    fleet["site-b"].faults.reset()
    watcher.sync_group_statuses("site-a")
    assert coordination.active_cluster(PAYMENTS) == "site-a"


def test_a_group_of_another_operator_is_left_alone(
    fleet: SandboxFleet, coordination: DynamoCoordination, make_watcher: MakeWatcher
) -> None:
    payments.load_fleet(fleet, active="site-a")
    watcher = make_watcher()  # the sample group's operatorID, not payments-team
    watcher.sync_group_statuses("site-a")
    assert coordination.active_cluster(PAYMENTS) is None
    obj = fleet["site-a"].store.get("FailoverGroup", "payments", "payments")
    assert "status" not in obj or not obj["status"]


def test_a_run_holding_the_lock_blocks_the_adoption(
    fleet: SandboxFleet, coordination: DynamoCoordination, make_watcher: MakeWatcher
) -> None:
    payments.load_fleet(fleet, active="site-a")
    grant = coordination.acquire_lock(
        PAYMENTS, holder="elsewhere", run_id="resolve-1", lease_seconds=300, now=time.time()
    )
    watcher = make_watcher(operator_id=payments.OPERATOR)
    watcher.sync_group_statuses("site-a")
    assert coordination.active_cluster(PAYMENTS) is None
    condition = adopted_condition(fleet, "site-a")
    assert (condition["status"], condition["reason"]) == ("False", "RunInFlight"), condition
    assert "run resolve-1 holds the group's lock" in condition["message"]
    coordination.release_lock(PAYMENTS, token=grant.token)
    watcher.sync_group_statuses("site-a")
    assert coordination.active_cluster(PAYMENTS) == "site-a"
