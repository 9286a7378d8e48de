"""Completion in DynamoDB is conditioned on the digest of the resources the run was pinned to, kept in
the lock item when the run took the lock (moto, the real adapter)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from fsm.models import GroupKey
from fsm.run import new_run
from sandbox.dynamo import dynamodb_client
from tests.factories import failover, group
from workers.dynamo import DynamoCoordination
from workers.errors import LeaseLost
from workers.steps import history_record

pytestmark = pytest.mark.integration


@pytest.fixture
def dynamo(dynamodb_endpoint: str) -> Iterator[DynamoCoordination]:
    client = dynamodb_client(dynamodb_endpoint)
    adapter = DynamoCoordination(f"pin-{uuid.uuid4().hex[:10]}", client=client)
    adapter.ensure_table()
    try:
        yield adapter
    finally:
        client.close()


def test_completion_with_another_digest_than_the_locks_changes_nothing(dynamo: DynamoCoordination) -> None:
    g = group()
    key: GroupKey = g.key
    run = new_run(run_id="pinned", failover=failover(), group=g, source_cluster="site-a", now=time.time())
    assert run.pin is not None
    dynamo.set_initial_owner(key, "site-a")
    grant = dynamo.acquire_lock(
        key, holder="h", run_id=run.run_id, lease_seconds=60, now=time.time(), digest=run.pin.digest
    )
    record = history_record(run, outcome="SUCCESS", now=time.time())

    with pytest.raises(LeaseLost, match="digest differs"):
        dynamo.complete_failover(
            key,
            token=grant.token,
            expected_owner="site-a",
            new_owner="site-b",
            record=record,
            digest="0" * 64,
        )
    assert dynamo.active_cluster(key) == "site-a" and dynamo.history(key) == []
    assert dynamo.lock_info(key) is not None

    dynamo.complete_failover(
        key,
        token=grant.token,
        expected_owner="site-a",
        new_owner="site-b",
        record=record,
        digest=run.pin.digest,
    )
    assert dynamo.active_cluster(key) == "site-b" and [h.run_id for h in dynamo.history(key)] == ["pinned"]
