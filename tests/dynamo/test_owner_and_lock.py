"""The owner and the lock with its fencing token: acquire, renew, expiry, takeover, stale tokens."""

from __future__ import annotations

import pytest

from fsm.models import GroupKey
from workers.dynamo import DynamoCoordination
from workers.errors import CoordinationConflict, LeaseLost, LockHeld

from .factories import history_record

pytestmark = pytest.mark.integration


def test_no_owner_until_the_first_is_set_explicitly(dynamo: DynamoCoordination, group: GroupKey) -> None:
    assert dynamo.active_cluster(group) is None
    assert dynamo.active_cluster(group) is None  # reading never sets an owner

    dynamo.set_initial_owner(group, "east")

    assert dynamo.active_cluster(group) == "east"


def test_initial_owner_is_set_only_once(dynamo: DynamoCoordination, group: GroupKey) -> None:
    dynamo.set_initial_owner(group, "east")

    with pytest.raises(CoordinationConflict, match="already has an owner, 'east'"):
        dynamo.set_initial_owner(group, "west")
    with pytest.raises(CoordinationConflict, match="already has an owner, 'east'"):
        dynamo.set_initial_owner(group, "east")

    assert dynamo.active_cluster(group) == "east"
    assert dynamo.calls["UpdateItem"] == 3  # conditional failures are never retried


def test_owners_of_different_groups_are_independent(dynamo: DynamoCoordination, group: GroupKey) -> None:
    other = GroupKey(operator_id=group.operator_id, namespace=group.namespace, name="payments")
    other_operator = GroupKey(operator_id="op-2", namespace=group.namespace, name=group.name)

    dynamo.set_initial_owner(group, "east")
    dynamo.set_initial_owner(other, "west")

    assert dynamo.active_cluster(other) == "west"
    assert dynamo.active_cluster(other_operator) is None


def test_acquire_grants_token_one_and_records_the_lock(dynamo: DynamoCoordination, group: GroupKey) -> None:
    grant = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)

    assert (grant.token, grant.holder, grant.run_id, grant.expires_at) == (1, "site-a", "run-1", 110.0)
    info = dynamo.lock_info(group)
    assert info is not None
    assert (info.token, info.holder, info.run_id, info.acquired_at, info.expires_at) == (
        1,
        "site-a",
        "run-1",
        100.0,
        110.0,
    )
    assert dynamo.calls == {"BatchGetItem": 1, "TransactWriteItems": 1, "GetItem": 1}  # + lock_info


def test_held_lock_names_holder_run_and_expiry(dynamo: DynamoCoordination, group: GroupKey) -> None:
    dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)

    with pytest.raises(LockHeld) as raised:
        dynamo.acquire_lock(group, holder="site-b", run_id="run-2", lease_seconds=10, now=105.0)

    assert raised.value.holder == "site-a"
    assert raised.value.expires_at == 110.0
    message = raised.value.message
    assert "'site-a'" in message
    assert "'run-1'" in message
    assert "expires in 5.0s" in message
    assert "1970-01-01T00:01:50+00:00" in message  # the absolute time too
    assert dynamo.lock_info(group).token == 1  # type: ignore[union-attr]


def test_the_holder_cannot_take_its_own_lock_twice(dynamo: DynamoCoordination, group: GroupKey) -> None:
    dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)

    with pytest.raises(LockHeld):
        dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=101.0)


def test_renewal_extends_the_lease(dynamo: DynamoCoordination, group: GroupKey) -> None:
    grant = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)

    assert dynamo.renew_lease(group, token=grant.token, lease_seconds=10, now=108.0) == 118.0

    with pytest.raises(LockHeld, match=r"expires in 3\.0s"):  # 115 would have been free without renewal
        dynamo.acquire_lock(group, holder="site-b", run_id="run-2", lease_seconds=10, now=115.0)
    assert dynamo.lock_info(group).expires_at == 118.0  # type: ignore[union-attr]


def test_expired_lock_is_taken_over_with_a_larger_token(dynamo: DynamoCoordination, group: GroupKey) -> None:
    first = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)

    second = dynamo.acquire_lock(group, holder="site-b", run_id="run-2", lease_seconds=10, now=110.5)

    assert second.token > first.token
    info = dynamo.lock_info(group)
    assert info is not None
    assert (info.holder, info.run_id, info.token) == ("site-b", "run-2", second.token)


def test_stale_token_cannot_renew_release_or_complete(dynamo: DynamoCoordination, group: GroupKey) -> None:
    dynamo.set_initial_owner(group, "east")
    stale = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)
    current = dynamo.acquire_lock(group, holder="site-b", run_id="run-2", lease_seconds=10, now=111.0)

    with pytest.raises(LeaseLost) as renew:
        dynamo.renew_lease(group, token=stale.token, lease_seconds=10, now=112.0)
    assert "token differs" in renew.value.message
    assert f"held by 'site-b' for run 'run-2' with token {current.token}" in renew.value.message

    assert dynamo.release_lock(group, token=stale.token) is False

    with pytest.raises(LeaseLost, match=r"cannot complete the failover .* token differs"):
        dynamo.complete_failover(
            group, token=stale.token, expected_owner="east", new_owner="west", record=history_record("run-1")
        )

    info = dynamo.lock_info(group)
    assert info is not None
    assert (info.token, info.holder, info.expires_at) == (current.token, "site-b", 121.0)
    assert dynamo.active_cluster(group) == "east"
    assert dynamo.history(group) == []


def test_release_frees_the_lock_and_the_counter_keeps_growing(
    dynamo: DynamoCoordination, group: GroupKey
) -> None:
    first = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)

    assert dynamo.release_lock(group, token=first.token) is True
    assert dynamo.lock_info(group) is None
    assert dynamo.release_lock(group, token=first.token) is False  # gone: no error

    with pytest.raises(LeaseLost, match="the lock is gone"):
        dynamo.renew_lease(group, token=first.token, lease_seconds=10, now=101.0)

    second = dynamo.acquire_lock(group, holder="site-b", run_id="run-2", lease_seconds=10, now=101.0)
    assert second.token == first.token + 1


def test_an_expired_lock_can_still_be_renewed_by_its_holder_until_taken(
    dynamo: DynamoCoordination, group: GroupKey
) -> None:
    grant = dynamo.acquire_lock(group, holder="site-a", run_id="run-1", lease_seconds=10, now=100.0)

    # The token is still current: no one else can have acted under a newer one.
    assert dynamo.renew_lease(group, token=grant.token, lease_seconds=10, now=130.0) == 140.0
