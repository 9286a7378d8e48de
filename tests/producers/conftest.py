"""Fixtures for the producers: two sandbox clusters with the sample group "shop" (active on site-a),
a moto DynamoDB with a table of each test's own (site-a recorded as the owner), the real Redis under
the test's key prefix and queue, and the producers' Kubernetes clients (closed afterwards)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.models import GroupKey
from producers.health import HealthChecker
from producers.kube import ClusterClient, connect
from producers.watcher import FailoverWatcher
from sandbox.dynamo import dynamodb_client
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.stack import SANDBOX_RUN_KEY
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination
from workers.settings import Settings

OPERATOR = "failover-orchestrator"
SHOP = GroupKey(operator_id=OPERATOR, namespace="shop", name="shop")
CLUSTERS = ["site-a", "site-b"]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")


def failover_manifest(
    name: str = "move-shop",
    target: str = "site-b",
    mode: str = "CONSISTENCY",
    groups: list[dict[str, str]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "targetCluster": target,
            "failoverMode": mode,
            "failoverGroups": [{"name": "shop"}] if groups is None else groups,
            **spec,
        },
    }


@pytest.fixture
def fleet_options() -> dict[str, Any]:
    """Options for every sandbox cluster; a test overrides this fixture to change them."""
    return {}


@pytest.fixture
def fleet(tmp_path: Path, fleet_options: dict[str, Any]) -> Iterator[SandboxFleet]:
    with SandboxFleet(CLUSTERS, kubeconfig_path=tmp_path / "kubeconfig", **fleet_options) as started:
        load_sample_fleet(started, active="site-a")
        yield started


@pytest.fixture
def coordination(dynamodb_endpoint: str) -> Iterator[DynamoCoordination]:
    client = dynamodb_client(dynamodb_endpoint)
    dynamo = DynamoCoordination(f"producers-{uuid.uuid4().hex[:10]}", client=client)
    dynamo.ensure_table()
    dynamo.set_initial_owner(SHOP, "site-a")
    try:
        yield dynamo
    finally:
        client.close()


@pytest.fixture
def settings(redis_server_url: str, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_server_url,
        key_prefix=prefix,
        broker_prefix=prefix,
        queue=f"{prefix}steps",
        clusters=CLUSTERS,
        operator_id=OPERATOR,
        run_key=SANDBOX_RUN_KEY,
    )


@pytest.fixture
def orchestrator(
    settings: Settings, coordination: DynamoCoordination, real_redis: redis.Redis
) -> Iterator[Orchestrator]:
    with Orchestrator(settings, coordination=coordination) as handle:
        yield handle


@pytest.fixture
def enqueued(real_redis: redis.Redis, settings: Settings) -> Callable[[], int]:
    """How many messages wait in the broker's list of the test's queue."""
    key = f"{settings.broker_prefix}{settings.queue}"
    return lambda: int(real_redis.llen(key))


@pytest.fixture
def clients(fleet: SandboxFleet) -> Iterator[dict[str, ClusterClient]]:
    """The watcher's clients (its own ServiceAccount, deploy/rbac)."""
    opened = connect(fleet.kubeconfig_for("watcher"), request_timeout=3.0)
    try:
        yield opened
    finally:
        for client in opened.values():
            client.close()


@pytest.fixture
def checker_clients(fleet: SandboxFleet) -> Iterator[dict[str, ClusterClient]]:
    """The health checker's clients (its own ServiceAccount, deploy/rbac)."""
    opened = connect(fleet.kubeconfig_for("health-checker"), request_timeout=3.0)
    try:
        yield opened
    finally:
        for client in opened.values():
            client.close()


@pytest.fixture
def make_watcher(
    orchestrator: Orchestrator, clients: dict[str, ClusterClient]
) -> Iterator[Callable[..., FailoverWatcher]]:
    made: list[FailoverWatcher] = []

    def make(**options: Any) -> FailoverWatcher:
        values: dict[str, Any] = {
            "operator_id": OPERATOR,
            "watch_timeout": 1,
            "backoff_initial": 0.05,
            "backoff_max": 0.4,
            "group_status_interval": 3600.0,
            **options,
        }
        watcher = FailoverWatcher(orchestrator, clients, **values)
        made.append(watcher)
        return watcher

    try:
        yield make
    finally:
        for watcher in made:
            watcher.stop()


@pytest.fixture
def checker(orchestrator: Orchestrator, checker_clients: dict[str, ClusterClient]) -> HealthChecker:
    return HealthChecker(orchestrator, checker_clients, operator_id=OPERATOR, cooldown=300.0)
