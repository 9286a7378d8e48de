"""complete_failover: owner flip, history and lock release in one transaction, all or nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from fsm.models import GroupKey
from workers.dynamo import DynamoCoordination
from workers.errors import CoordinationConflict, LeaseLost

from .factories import history_record

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration


def _partition(client: DynamoDBClient, table: str, group: GroupKey) -> list[dict[str, Any]]:
    """Every item of the group, raw: what 'nothing changed' is checked against."""
    pk = f"GROUP#{group.operator_id}#{group.namespace}#{group.name}"
    response = client.query(
        TableName=table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )
    return list(response["Items"])


@pytest.fixture
def locked(dynamo: DynamoCoordination, group: GroupKey) -> int:
    """The group owned by east and locked by site-a; returns the token."""
    dynamo.set_initial_owner(group, "east")
    grant = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=60, now=100.0)
    dynamo.calls.clear()
    return grant.token


def test_completion_flips_owner_writes_history_and_releases_in_one_call(
    dynamo: DynamoCoordination, client: DynamoDBClient, group: GroupKey, locked: int
) -> None:
    record = history_record("run-1")

    dynamo.complete_failover(group, token=locked, expected_owner="east", new_owner="west", record=record)

    assert dynamo.calls == {"TransactWriteItems": 1}
    assert dynamo.active_cluster(group) == "west"
    assert dynamo.history(group) == [record]
    assert dynamo.lock_info(group) is None
    config = next(i for i in _partition(client, dynamo.table_name, group) if i["SK"]["S"] == "CONFIG")
    assert config["previousOwner"] == {"S": "east"}
    assert config["version"] == {"N": "2"}  # 1 when first set, +1 per flip
    assert config["lastFailover"] == {"N": "142.5"}
    assert config["lockToken"] == {"N": str(locked)}  # the counter is kept for the next acquirer

    again = dynamo.acquire_lock(group, holder="site-b", run_id="run-2", lease_seconds=60, now=200.0)
    assert again.token == locked + 1


def test_wrong_expected_owner_changes_nothing_and_names_the_owner_condition(
    dynamo: DynamoCoordination, client: DynamoDBClient, group: GroupKey, locked: int
) -> None:
    before = _partition(client, dynamo.table_name, group)

    with pytest.raises(CoordinationConflict) as raised:
        dynamo.complete_failover(
            group, token=locked, expected_owner="west", new_owner="south", record=history_record("run-1")
        )

    message = raised.value.message
    assert "owner condition failed" in message
    assert "expected the active cluster to be 'west', but it is 'east'" in message
    assert _partition(client, dynamo.table_name, group) == before  # owner, history and lock untouched
    assert dynamo.active_cluster(group) == "east"
    assert dynamo.history(group) == []
    assert dynamo.lock_info(group).token == locked  # type: ignore[union-attr]
    assert dynamo.calls["TransactWriteItems"] == 1  # not retried


def test_wrong_token_changes_nothing_and_names_the_token(
    dynamo: DynamoCoordination, client: DynamoDBClient, group: GroupKey, locked: int
) -> None:
    before = _partition(client, dynamo.table_name, group)

    with pytest.raises(LeaseLost) as raised:
        dynamo.complete_failover(
            group, token=locked + 7, expected_owner="east", new_owner="west", record=history_record("run-1")
        )

    message = raised.value.message
    assert f"with token {locked + 7}: the token differs" in message
    assert f"held by 'site-a' for run 'run-1' with token {locked}" in message
    assert "owner" not in message
    assert _partition(client, dynamo.table_name, group) == before


def test_both_conditions_failing_is_a_lost_lease_that_mentions_the_owner_too(
    dynamo: DynamoCoordination, client: DynamoDBClient, group: GroupKey, locked: int
) -> None:
    dynamo.release_lock(group, token=locked)
    before = _partition(client, dynamo.table_name, group)

    with pytest.raises(LeaseLost) as raised:
        dynamo.complete_failover(
            group, token=locked, expected_owner="west", new_owner="east", record=history_record("run-1")
        )

    assert "the lock is gone" in raised.value.message
    assert "also the owner condition failed" in raised.value.message
    assert _partition(client, dynamo.table_name, group) == before


def test_completion_without_a_recorded_owner_says_so(dynamo: DynamoCoordination, group: GroupKey) -> None:
    grant = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=60, now=100.0)

    with pytest.raises(CoordinationConflict, match="expected 'east', but no owner is recorded"):
        dynamo.complete_failover(
            group, token=grant.token, expected_owner="east", new_owner="west", record=history_record("run-1")
        )

    assert dynamo.lock_info(group) is not None
    assert dynamo.active_cluster(group) is None


def test_volume_handshake_is_fenced_by_the_token(dynamo: DynamoCoordination, group: GroupKey) -> None:
    with pytest.raises(LeaseLost, match="the lock is gone"):
        dynamo.mark_volumes_released(group, token=1, cluster="east")
    grant = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)
    assert dynamo.volumes_released(group, token=grant.token) is None

    dynamo.mark_volumes_released(group, token=grant.token, cluster="east")
    dynamo.mark_volumes_released(group, token=grant.token, cluster="east")  # idempotent

    assert dynamo.volumes_released(group, token=grant.token) == "east"
    assert dynamo.volumes_released(group, token=grant.token + 1) is None

    newer = dynamo.acquire_lock(group, holder="site-b", run_id="run-2", lease_seconds=10, now=111.0)
    with pytest.raises(LeaseLost, match=r"cannot mark the volumes released .* token differs"):
        dynamo.mark_volumes_released(group, token=grant.token, cluster="west")
    assert dynamo.volumes_released(group, token=newer.token) is None
    assert dynamo.volumes_released(group, token=grant.token) == "east"


def _complete(
    dynamo: DynamoCoordination,
    group: GroupKey,
    token: int,
    *,
    expected_owner: str = "east",
    holder: str | None = None,
) -> None:
    """run-1's completion east -> west under ``token``, naming ``holder`` when given."""
    dynamo.complete_failover(
        group,
        token=token,
        expected_owner=expected_owner,
        new_owner="west",
        record=history_record("run-1"),
        holder=holder,
    )


def test_completion_naming_the_holder_drops_its_lock_index_entry_in_the_same_call(
    dynamo: DynamoCoordination, group: GroupKey, locked: int
) -> None:
    """The workers name their holder: the index entry goes with the lock, in the one transaction, so
    the recovery sweep has nothing to read and delete for it later. Another holder's entries stay."""
    other = GroupKey(operator_id=group.operator_id, namespace=group.namespace, name=f"{group.name}-other")
    dynamo.acquire_lock(other, holder="site-a", run_id="run-9", lease_seconds=60, now=100.0)
    assert {h.group for h in dynamo.held_locks("site-a")} == {group, other}
    dynamo.calls.clear()

    _complete(dynamo, group, locked, holder="site-a")

    assert dynamo.calls == {"TransactWriteItems": 1}
    assert [h.group for h in dynamo.held_locks("site-a")] == [other]
    assert dynamo.lock_info(group) is None and dynamo.active_cluster(group) == "west"


def test_completion_without_the_holder_leaves_the_index_entry_to_the_recovery_sweep(
    dynamo: DynamoCoordination, group: GroupKey, locked: int
) -> None:
    _complete(dynamo, group, locked)

    [entry] = dynamo.held_locks("site-a")
    assert entry.group == group and dynamo.lock_info(group) is None  # stale: the sweep's to drop
    dynamo.forget_held_lock("site-a", group, entry.lock_owner)
    assert dynamo.held_locks("site-a") == []


def test_a_refused_completion_naming_the_holder_keeps_the_index_entry(
    dynamo: DynamoCoordination, group: GroupKey, locked: int
) -> None:
    with pytest.raises(CoordinationConflict):
        _complete(dynamo, group, locked, expected_owner="north", holder="site-a")

    assert [h.group for h in dynamo.held_locks("site-a")] == [group]  # all or nothing
    assert dynamo.lock_info(group) is not None
