"""``failoverctl group adopt`` and ``group show`` against two sandbox clusters (the operator's own
identity), a moto DynamoDB server and the real Redis, in process. No worker runs here: the paths that
settle clusters through RESOLVE runs are in tests/e2e/test_adopt_e2e.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from producers.cli import app
from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION, dynamodb_client
from sandbox.kube import SandboxFleet
from sandbox.stack import SANDBOX_RUN_KEY
from tests import payments
from tests.payments import PAYMENTS
from workers.dynamo import DynamoCoordination

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[SandboxFleet]:
    with SandboxFleet(["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig") as started:
        yield started


@pytest.fixture
def coordination(
    *,
    fleet: SandboxFleet,
    dynamodb_endpoint: str,
    redis_server_url: str,
    real_redis: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[DynamoCoordination]:
    table = f"adopt-{uuid.uuid4().hex[:10]}"
    values = {
        "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
        "FAILOVER_DYNAMODB_TABLE": table,
        "FAILOVER_REDIS_URL": redis_server_url,
        "FAILOVER_KEY_PREFIX": prefix,
        "FAILOVER_BROKER_PREFIX": prefix,
        "FAILOVER_QUEUE": f"{prefix}steps",
        "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        "FAILOVER_KUBECONFIG": str(fleet.kubeconfig_for("operator")),
        "FAILOVER_CLUSTERS": '["site-a", "site-b"]',
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "USER": "alice",
        "COLUMNS": "250",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    client = dynamodb_client(dynamodb_endpoint)
    dynamo = DynamoCoordination(table, client=client)
    dynamo.ensure_table()
    try:
        yield dynamo
    finally:
        client.close()


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def test_adopt_records_the_one_active_cluster_with_its_evidence(
    fleet: SandboxFleet, coordination: DynamoCoordination
) -> None:
    payments.load_fleet(fleet, active="site-a")
    code, out = invoke("group", "adopt", "payments/payments", "--reason", "bring payments")
    assert code == 0, out
    assert "site-a: ACTIVE" in out and "site-b: PASSIVE" in out
    assert "active:  Deployment/api: 2 replicas, 2 ready" in out
    assert "group payments/payments adopted: site-a recorded as its active cluster" in out
    assert coordination.active_cluster(PAYMENTS) == "site-a"
    [record] = coordination.history(PAYMENTS)
    assert (record.outcome, record.actor, record.reason) == ("ADOPTED", "alice", "bring payments")
    assert "site-b: PASSIVE (passive: Deployment/api" in record.message

    # Already that owner: a no-op success that says so; another owner: exit 1 pointing at resolve.
    for again in ([], ["--active", "site-a"]):
        code, out = invoke("group", "adopt", "payments/payments", *again)
        assert code == 0 and "already adopted: site-a is its active cluster; nothing to do" in out, out
    code, out = invoke("group", "adopt", "payments/payments", "--active", "site-b", "--yes")
    assert code == 1
    assert "already has an owner, 'site-a', not 'site-b'" in out
    assert "failoverctl group resolve payments/payments --active site-b" in out
    assert len(coordination.history(PAYMENTS)) == 1 and coordination.active_cluster(PAYMENTS) == "site-a"


def test_an_ambiguous_group_shows_each_cluster_and_asks_for_active(
    fleet: SandboxFleet, coordination: DynamoCoordination
) -> None:
    payments.load_fleet(fleet, active=None)
    api = fleet["site-b"].store.get("Deployment", "payments", "api")
    api["spec"]["replicas"], api["status"]["readyReplicas"] = 2, 2
    fleet["site-b"].store.put(api)  # site-b: the api runs, everything else is passive
    code, out = invoke("group", "adopt", "payments/payments")
    assert code == 1
    assert "site-a: PASSIVE" in out and "site-b: MIXED" in out
    assert "active:  Deployment/api" in out and "passive: StatefulSet/ledger" in out
    assert "error: group payments/payments: site-b holds both active and passive" in out
    assert "`failoverctl group adopt payments/payments --active site-b`" in out
    # With --active the other clusters would be settled: it asks first; "no" changes nothing.
    code, out = invoke("group", "adopt", "payments/payments", "--active", "site-b", input="n\n")
    assert code == 1 and "Record site-b as the owner" in out and "Aborted" in out
    assert coordination.active_cluster(PAYMENTS) is None and coordination.history(PAYMENTS) == []
    code, out = invoke("group", "adopt", "payments/payments", "--active", "site-c")
    assert code == 2 and "--active 'site-c' is not one of the clusters" in out


def test_an_unreachable_cluster_is_ambiguous(fleet: SandboxFleet, coordination: DynamoCoordination) -> None:
    payments.load_fleet(fleet, active="site-a")
    fleet["site-b"].faults.fail_next(1000, 503)
    code, out = invoke("group", "adopt", "payments/payments")
    assert code == 1 and "site-b: UNREACHABLE" in out and "site-b could not be read" in out, out
    code, out = invoke("group", "adopt", "payments/payments", "--active", "site-a", "--yes")
    assert code == 1 and "adopt the group when every cluster answers" in out, out
    assert coordination.active_cluster(PAYMENTS) is None


def test_with_active_on_a_clean_group_it_only_records(
    fleet: SandboxFleet, coordination: DynamoCoordination
) -> None:
    payments.load_fleet(fleet, active="site-b")
    code, out = invoke("group", "adopt", "payments/payments", "--active", "site-b")
    assert code == 0 and "adopted: site-b recorded" in out and "run " not in out, out
    assert coordination.active_cluster(PAYMENTS) == "site-b"


def test_failing_over_a_group_without_owner_names_the_command(
    fleet: SandboxFleet, coordination: DynamoCoordination, tmp_path: Path
) -> None:
    payments.load_fleet(fleet, active="site-a")
    manifest = tmp_path / "failover.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "crd.hahomelabs.com/v1alpha1",
                "kind": "Failover",
                "metadata": {"name": "move-payments", "namespace": "payments"},
                "spec": {
                    "targetCluster": "site-b",
                    "failoverMode": "CONSISTENCY",
                    "failoverGroups": [{"name": "payments"}],
                },
            }
        )
    )
    code, out = invoke("plan", "-f", str(manifest), "--context", "site-a")
    assert code != 0
    assert "no active cluster recorded" in out and "failoverctl group adopt payments/payments" in out, out


def test_group_show_prints_owner_lock_clusters_and_history(
    fleet: SandboxFleet, coordination: DynamoCoordination
) -> None:
    payments.load_fleet(fleet, active="site-a")
    code, out = invoke("group", "show", "payments/payments")
    assert code == 0, out
    assert "owner:      none recorded; adopt it with `failoverctl group adopt payments/payments" in out
    assert invoke("group", "adopt", "payments/payments")[0] == 0
    grant = coordination.acquire_lock(PAYMENTS, holder="site-x", run_id="run-7", lease_seconds=300, now=2e9)
    code, out = invoke("group", "show", "payments/payments")
    assert code == 0, out
    assert "owner:      site-a" in out
    assert f"held by site-x for run run-7, fencing token {grant.token}" in out
    assert "site-a: ACTIVE (active: Deployment/api" in out and "site-b: PASSIVE" in out
    # Health per cluster, judged against the role the owner gives each (as the health checker judges).
    assert "health OK as PRIMARY" in out and "health OK as STANDBY" in out, out
    assert "ADOPTED" in out and "site-a" in out
    code, out = invoke("group", "show", "payments/payments", "--output", "json")
    shown = json.loads(out)
    assert shown["owner"] == "site-a" and shown["operatorID"] == payments.OPERATOR
    assert shown["lock"]["token"] == grant.token and shown["divergence"] is None
    assert [c["verdict"] for c in shown["clusters"]] == ["ACTIVE", "PASSIVE"]
    assert [(c["health"]["health"], c["health"]["role"]) for c in shown["clusters"]] == [
        ("OK", "PRIMARY"),
        ("OK", "STANDBY"),
    ]
    assert [h["outcome"] for h in shown["history"]] == ["ADOPTED"]
    code, out = invoke("group", "show", "payments/nope")
    assert code == 1 and "no FailoverGroup payments/nope on any cluster" in out
