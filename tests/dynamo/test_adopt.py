"""Adoption on DynamoDB: the first owner and its ADOPTED history record in one compare-and-set.
Two sites adopting at once: exactly one wins, the others are told who owns the group, and nothing of
theirs is written."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
import redis

from fsm.models import GroupKey
from sandbox.fakes import FakeCoordination
from workers.dynamo import DynamoCoordination
from workers.errors import AlreadyOwned
from workers.ports import HistoryRecord

from .factories import history_record
from .test_completion import _partition

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration


def adopted(run_id: str, cluster: str, actor: str = "alice") -> HistoryRecord:
    return history_record(
        run_id,
        outcome="ADOPTED",
        failover="",
        mode="",
        source_cluster="",
        target_cluster=cluster,
        downtime_seconds=None,
        message=f"{cluster} adopted; seen: {cluster}: ACTIVE",
        actor=actor,
    )


def test_adoption_records_the_owner_and_the_evidence_once(
    dynamo: DynamoCoordination, client: DynamoDBClient, group: GroupKey
) -> None:
    dynamo.adopt(group, "east", adopted("adopt-1", "east"))
    assert dynamo.active_cluster(group) == "east"
    [record] = dynamo.history(group)
    assert (record.outcome, record.target_cluster, record.actor) == ("ADOPTED", "east", "alice")
    assert "seen: east: ACTIVE" in record.message
    before = _partition(client, dynamo.table_name, group)
    for cluster in ("west", "east"):
        with pytest.raises(AlreadyOwned, match="already has an owner, 'east'") as raised:
            dynamo.adopt(group, cluster, adopted(f"adopt-{cluster}-2", cluster))
        assert raised.value.owner == "east"
    assert _partition(client, dynamo.table_name, group) == before  # nothing of the losers written


def test_a_group_with_an_owner_set_otherwise_is_not_adopted(
    dynamo: DynamoCoordination, group: GroupKey
) -> None:
    dynamo.set_initial_owner(group, "west")
    with pytest.raises(AlreadyOwned) as raised:
        dynamo.adopt(group, "east", adopted("adopt-1", "east"))
    assert raised.value.owner == "west" and dynamo.history(group) == []


def test_adoption_leaves_the_fencing_counter_and_lock_alone(
    dynamo: DynamoCoordination, group: GroupKey
) -> None:
    grant = dynamo.acquire_lock(group, holder="w", run_id="r1", lease_seconds=30, now=1000.0)
    dynamo.release_lock(group, token=grant.token)
    dynamo.adopt(group, "east", adopted("adopt-1", "east"))
    later = dynamo.acquire_lock(group, holder="w", run_id="r2", lease_seconds=30, now=1001.0)
    assert later.token == grant.token + 1


def test_two_sites_adopting_at_once_one_wins(make_adapter: Callable[..., DynamoCoordination]) -> None:
    sites = [make_adapter() for _ in range(6)]
    sites[0].ensure_table()
    groups = [GroupKey(operator_id="op-1", namespace="payments", name=f"payments-{i}") for i in range(10)]
    start = threading.Barrier(len(sites))

    def adopt_all(index: int) -> list[tuple[GroupKey, str | None]]:
        cluster = "east" if index % 2 == 0 else "west"
        results: list[tuple[GroupKey, str | None]] = []
        start.wait(timeout=30)
        for group in groups if index % 2 == 0 else groups[::-1]:
            try:
                sites[index].adopt(
                    group, cluster, adopted(f"adopt-{index}-{group.name}", cluster, f"site-{index}")
                )
            except AlreadyOwned as owned:
                results.append((group, owned.owner))
            else:
                results.append((group, None))
        return results

    with ThreadPoolExecutor(max_workers=len(sites)) as pool:
        outcomes = [r for rs in pool.map(adopt_all, range(len(sites))) for r in rs]
    for group in groups:
        mine = [owner for g, owner in outcomes if g == group]
        assert mine.count(None) == 1, (group, mine)  # exactly one winner
        owner = sites[0].active_cluster(group)
        assert owner in ("east", "west")
        assert all(o == owner for o in mine if o is not None)  # the losers are told who owns it
        [record] = sites[0].history(group)
        assert (record.outcome, record.target_cluster) == ("ADOPTED", owner)


def test_the_fake_coordination_adopts_the_same_way(
    real_redis: redis.Redis, prefix: str, group: GroupKey
) -> None:
    fake = FakeCoordination(real_redis, f"{prefix}fake:")
    fake.adopt(group, "east", adopted("adopt-1", "east"))
    with pytest.raises(AlreadyOwned) as raised:
        fake.adopt(group, "west", adopted("adopt-2", "west"))
    assert raised.value.owner == "east" and fake.active_cluster(group) == "east"
    [record] = fake.history(group)
    assert (record.run_id, record.outcome, record.actor) == ("adopt-1", "ADOPTED", "alice")
