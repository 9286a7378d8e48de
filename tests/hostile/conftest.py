"""Fixtures of the hostile-input tests: fuzz counters printed in the terminal summary, and a stack for
the CLI (two sandbox clusters with the sample group, active on site-a; a moto DynamoDB table naming
site-a the owner; the real Redis under a prefix of its own) whose state is compared before and after."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.models import GroupKey
from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION, dynamodb_client
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.stack import SANDBOX_RUN_KEY
from workers.dynamo import DynamoCoordination

SHOP = GroupKey(operator_id="failover-orchestrator", namespace="shop", name="shop")
COUNTS: Counter[tuple[str, str]] = Counter()


def count(test: str, outcome: str) -> None:
    """One generated input of ``test`` and what became of it (accepted or rejected)."""
    COUNTS[(test, "generated")] += 1
    COUNTS[(test, outcome)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tests = sorted({test for test, _ in COUNTS})
    if not tests:
        return
    terminalreporter.section("hostile input fuzz")
    total: Counter[str] = Counter()
    for test in tests:
        line = {what: COUNTS[(test, what)] for what in ("generated", "accepted", "rejected")}
        total.update(line)
        terminalreporter.write_line(
            f"{test}: generated {line['generated']}, accepted {line['accepted']}, rejected {line['rejected']}"
        )
    terminalreporter.write_line(
        f"total: generated {total['generated']}, accepted {total['accepted']}, rejected {total['rejected']}"
    )


@dataclass
class Stack:
    fleet: SandboxFleet
    coordination: DynamoCoordination
    redis: redis.Redis
    prefix: str
    directory: Path
    env: dict[str, str] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        """Everything a command could have changed: objects on both clusters, table items, Redis keys."""
        objects = {}
        for cluster in self.fleet:
            for kind in (
                "Failover",
                "FailoverGroup",
                "Deployment",
                "StatefulSet",
                "CronJob",
                "VolumeReplication",
            ):
                for obj in cluster.store.list(kind)[0]:
                    meta = obj["metadata"]
                    objects[(cluster.name, kind, meta.get("namespace"), meta["name"])] = meta[
                        "resourceVersion"
                    ]
        client = dynamodb_client(self.env["FAILOVER_DYNAMODB_ENDPOINT_URL"])
        try:
            items = client.scan(TableName=self.coordination.table_name)["Items"]
        finally:
            client.close()
        return {
            "objects": objects,
            "items": sorted(str(item) for item in items),
            "redis": sorted(self.redis.scan_iter(f"{self.prefix}*")),
        }


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, dynamodb_endpoint: str, redis_server_url: str
) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("hostile")
    prefix = f"hostile-{uuid.uuid4().hex[:8]}:"
    client = dynamodb_client(dynamodb_endpoint)
    coordination = DynamoCoordination(f"hostile-{uuid.uuid4().hex[:10]}", client=client)
    coordination.ensure_table()
    coordination.set_initial_owner(SHOP, "site-a")
    connection = redis.Redis.from_url(redis_server_url)
    env = {
        "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
        "FAILOVER_DYNAMODB_TABLE": coordination.table_name,
        "FAILOVER_REDIS_URL": redis_server_url,
        "FAILOVER_KEY_PREFIX": prefix,
        "FAILOVER_BROKER_PREFIX": prefix,
        "FAILOVER_QUEUE": f"{prefix}steps",
        "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        "FAILOVER_OPERATOR_ID": SHOP.operator_id,
        "FAILOVER_CLUSTERS": '["site-a", "site-b"]',
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    with (
        SandboxFleet(["site-a", "site-b"], kubeconfig_path=directory / "kubeconfig") as fleet,
        pytest.MonkeyPatch.context() as patch,
    ):
        load_sample_fleet(fleet, active="site-a")
        env["FAILOVER_KUBECONFIG"] = str(fleet.kubeconfig_for("operator"))  # failoverctl runs as a person
        for name, value in env.items():
            patch.setenv(name, value)
        try:
            yield Stack(fleet, coordination, connection, prefix, directory, env)
        finally:
            connection.close()
            client.close()
