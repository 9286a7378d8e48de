"""Divergence and its settlement on DynamoDB: the first record wins; settling sets the owner, clears
the divergence, writes history and releases the lock in one transaction, or changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fsm.models import GroupKey
from workers.dynamo import DynamoCoordination
from workers.errors import LeaseLost
from workers.ports import Divergence

from .factories import history_record
from .test_completion import _partition, locked  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration


def test_the_first_divergence_is_kept_until_settled(dynamo: DynamoCoordination, group: GroupKey) -> None:
    dynamo.set_initial_owner(group, "east")
    assert dynamo.divergence(group) is None
    first = Divergence(
        reason="run r1 failed past its point of no return", at=10.0, run_id="r1", step="demote"
    )
    dynamo.mark_diverged(group, first)
    dynamo.mark_diverged(group, Divergence(reason="the owner does not serve", at=20.0))
    assert dynamo.divergence(group) == first
    assert dynamo.active_cluster(group) == "east"  # the owner is untouched


def test_settling_sets_the_owner_clears_the_divergence_and_releases(
    dynamo: DynamoCoordination,
    group: GroupKey,
    locked: int,  # noqa: F811
) -> None:
    dynamo.mark_diverged(group, Divergence(reason="diverged", at=10.0))
    record = history_record("resolve-1", outcome="RESOLVED", source_cluster="east", target_cluster="west")
    dynamo.settle_owner(group, token=locked, owner="west", record=record)
    assert dynamo.active_cluster(group) == "west"
    assert dynamo.divergence(group) is None
    assert dynamo.lock_info(group) is None
    [written] = dynamo.history(group)
    assert (written.run_id, written.outcome) == ("resolve-1", "RESOLVED")


def test_settling_under_a_stale_token_changes_nothing(
    dynamo: DynamoCoordination,
    client: DynamoDBClient,
    group: GroupKey,
    locked: int,  # noqa: F811
) -> None:
    dynamo.mark_diverged(group, Divergence(reason="diverged", at=10.0))
    before = _partition(client, dynamo.table_name, group)
    with pytest.raises(LeaseLost, match=f"with token {locked + 3}"):
        dynamo.settle_owner(group, token=locked + 3, owner="west", record=history_record("resolve-1"))
    assert _partition(client, dynamo.table_name, group) == before
