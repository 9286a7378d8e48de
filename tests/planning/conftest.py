"""Fixtures for the dry-run tests: two sandbox clusters with the sample group "shop" (active on
site-a, passive on site-b), the Kubernetes adapter on their kubeconfig (closed afterwards), and, for
the Orchestrator, the CLI and the watcher, a moto DynamoDB with site-a recorded as the owner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.models import Failover, FailoverGroup, GroupKey
from producers.kube import ClusterClient, connect
from sandbox.dynamo import dynamodb_client
from sandbox.kube import SandboxFleet, load_sample_fleet, sample_manifests
from sandbox.stack import SANDBOX_RUN_KEY
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination
from workers.kube import KubeClients, KubeEffects
from workers.settings import Settings

OPERATOR = "failover-orchestrator"
SHOP = GroupKey(operator_id=OPERATOR, namespace="shop", name="shop")
CLUSTERS = ["site-a", "site-b"]
# Controllers fast enough that a real run through the effects settles quickly.
FAST: dict[str, Any] = {
    "tick": 0.01,
    "workload_delay": 0.05,
    "replica_step": 0.02,
    "volume_delay": 0.05,
    "volume_resync_delay": 0.1,
    "flux_delay": 0.05,
    "job_duration": 0.3,
}


def failover_manifest(
    name: str = "move-shop", target: str = "site-b", mode: str = "CONSISTENCY", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"targetCluster": target, "failoverMode": mode, "failoverGroups": [{"name": "shop"}], **spec},
    }


def sample_group() -> FailoverGroup:
    [raw] = [d for d in sample_manifests() if d["kind"] == "FailoverGroup"]
    return FailoverGroup.model_validate(raw)


def failover_of(mode: str = "CONSISTENCY", **spec: Any) -> Failover:
    return Failover.model_validate(failover_manifest(mode=mode, **spec))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[SandboxFleet]:
    with SandboxFleet(CLUSTERS, kubeconfig_path=tmp_path / "kubeconfig", **FAST) as started:
        load_sample_fleet(started, active="site-a")
        yield started


@pytest.fixture
def effects(fleet: SandboxFleet) -> Iterator[KubeEffects]:
    made = KubeEffects(KubeClients(fleet.kubeconfig_path, connect_timeout=0.5, read_timeout=3.0))
    yield made
    made.close()


@pytest.fixture
def table() -> str:
    return f"planning-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def coordination(dynamodb_endpoint: str, table: str) -> Iterator[DynamoCoordination]:
    client = dynamodb_client(dynamodb_endpoint)
    dynamo = DynamoCoordination(table, client=client)
    dynamo.ensure_table()
    dynamo.set_initial_owner(SHOP, "site-a")
    try:
        yield dynamo
    finally:
        client.close()


@pytest.fixture
def settings(redis_server_url: str, prefix: str, fleet: SandboxFleet) -> Settings:
    return Settings(
        redis_url=redis_server_url,
        key_prefix=prefix,
        broker_prefix=prefix,
        queue=f"{prefix}steps",
        clusters=CLUSTERS,
        operator_id=OPERATOR,
        run_key=SANDBOX_RUN_KEY,
        kubeconfig=str(fleet.kubeconfig_path),
    )


@pytest.fixture
def orchestrator(
    settings: Settings, coordination: DynamoCoordination, real_redis: redis.Redis
) -> Iterator[Orchestrator]:
    with Orchestrator(settings, coordination=coordination) as handle:
        yield handle


@pytest.fixture
def clients(fleet: SandboxFleet) -> Iterator[dict[str, ClusterClient]]:
    opened = connect(fleet.kubeconfig_for("watcher"), request_timeout=3.0)
    try:
        yield opened
    finally:
        for client in opened.values():
            client.close()
