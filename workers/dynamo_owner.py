"""The owner side of :class:`workers.dynamo.DynamoCoordination`: the first owner (set by hand or
adopted), divergence, and its settlement. A mixin on the same table, split out by theme; the table
layout and the consistency of each operation are described in :mod:`workers.dynamo`.

Adoption (``adopt``) is ONE TransactWriteItems: the CONFIG update that records the owner, conditioned
on ``attribute_not_exists(ownerCluster)``, and the ADOPTED history put. Two sites adopting at once: one
transaction wins, the other is cancelled and told who owns the group (``AlreadyOwned``); nothing of it
is written. The request token is a function of the record, so a retry of a transaction whose answer
was lost is answered with success by DynamoDB.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING

from fsm.models import GroupKey
from workers import dynamo_codec as codec
from workers.dynamo_table import ConditionFailed, DynamoTable
from workers.errors import AlreadyOwned, CoordinationConflict, LeaseLost
from workers.ports import Divergence, HistoryRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef


def _names(*attributes: str) -> dict[str, str]:
    return {f"#{a}": a for a in attributes}


def adoption_transaction(
    table: str, pk: str, *, cluster: str, record: HistoryRecord
) -> list[TransactWriteItemTypeDef]:
    """[0] CONFIG: owner set if none is recorded, [1] the ADOPTED history put."""
    return [
        {
            "Update": {
                "TableName": table,
                "Key": codec.key(pk, codec.CONFIG_SK),
                "UpdateExpression": "SET #ownerCluster = :cluster, "
                "#version = if_not_exists(#version, :one), #adoptedAt = :at",
                "ConditionExpression": "attribute_not_exists(#ownerCluster)",
                "ExpressionAttributeNames": _names("ownerCluster", "version", "adoptedAt"),
                "ExpressionAttributeValues": {
                    ":cluster": codec.s(cluster),
                    ":one": codec.n(1),
                    ":at": codec.n(record.finished_at),
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
        {"Put": {"TableName": table, "Item": codec.history_item(pk, record)}},
    ]


class OwnerRecords:
    """Owner, adoption and divergence operations (mixed into DynamoCoordination)."""

    _db: DynamoTable
    _table: str
    _client: DynamoDBClient

    def set_initial_owner(self, group: GroupKey, cluster: str) -> None:
        """Record the first owner; raises CoordinationConflict (naming it) if one is recorded already."""
        request = partial(
            self._client.update_item,
            TableName=self._table,
            Key=codec.key(codec.group_pk(group), codec.CONFIG_SK),
            UpdateExpression="SET #ownerCluster = :cluster, #version = if_not_exists(#version, :one)",
            ConditionExpression="attribute_not_exists(#ownerCluster)",
            ExpressionAttributeNames=_names("ownerCluster", "version"),
            ExpressionAttributeValues={":cluster": codec.s(cluster), ":one": codec.n(1)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        try:
            self._db.call("UpdateItem", f"set initial owner of {group} to {cluster!r}", request)
        except ConditionFailed as failed:
            owner = codec.get_opt_str(failed.item or {}, "ownerCluster")
            if owner == cluster and failed.attempt > 1:
                return  # our earlier attempt wrote it and its answer was lost
            raise CoordinationConflict(
                f"group {group} already has an owner, {owner!r}; the first owner is set only once "
                f"(asked for {cluster!r}); move it with a failover instead"
            ) from failed.error

    def adopt(self, group: GroupKey, cluster: str, record: HistoryRecord) -> None:
        """Record ``cluster`` as the first owner with the ADOPTED ``record``, in one transaction, only
        while no owner is recorded; raises AlreadyOwned naming the owner otherwise."""
        pk = codec.group_pk(group)
        items = adoption_transaction(self._table, pk, cluster=cluster, record=record)
        token = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self._table}/{pk}/adopt/{cluster}/{record.run_id}"))
        try:
            self._db.transact(f"adopt group {group} on {cluster!r}", items, token)
        except ConditionFailed as failed:
            _, old = failed.reason(0)
            owner = codec.get_opt_str(old or {}, "ownerCluster")
            if owner == cluster and failed.attempt > 1 and self._adopted_by(group, record.run_id):
                return  # our earlier attempt committed and its answer was lost
            raise AlreadyOwned(
                f"group {group} already has an owner, {owner!r} (asked to adopt it on {cluster!r}); "
                "nothing was recorded",
                owner=owner,
            ) from failed.error

    def _adopted_by(self, group: GroupKey, run_id: str) -> bool:
        pk = codec.group_pk(group)
        items = self._db.query(
            pk, codec.HISTORY_PREFIX, f"read history of {group}", newest_first=True, limit=10
        )
        return any(codec.get_str(item, "runId") == run_id for item in items)

    # --- divergence ------------------------------------------------------------------------------

    def divergence(self, group: GroupKey) -> Divergence | None:
        item = self._db.get(codec.group_pk(group), codec.CONFIG_SK, f"read divergence of {group}")
        return codec.divergence_of(item) if item else None

    def mark_diverged(self, group: GroupKey, divergence: Divergence) -> None:
        """Record the divergence unless one is recorded already (the first cause is the one to settle)."""
        request = partial(
            self._client.update_item,
            TableName=self._table,
            Key=codec.key(codec.group_pk(group), codec.CONFIG_SK),
            UpdateExpression="SET #diverged = :diverged",
            ConditionExpression="attribute_not_exists(#diverged)",
            ExpressionAttributeNames=_names("diverged"),
            ExpressionAttributeValues={":diverged": codec.s(codec.divergence_json(divergence))},
        )
        try:
            self._db.call("UpdateItem", f"mark group {group} diverged", request)
        except ConditionFailed:
            return  # already diverged: the first record stands until an operator settles it

    def settle_owner(self, group: GroupKey, *, token: int, owner: str, record: HistoryRecord) -> None:
        """Set the owner, clear the divergence, write history and release the lock in one transaction."""
        pk = codec.group_pk(group)
        what = f"settle group {group} on {owner!r} (token {token})"
        items = codec.settlement_transaction(self._table, pk, token=token, owner=owner, record=record)
        request_token = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{self._table}/{pk}/{token}/{record.run_id}/settle")
        )
        try:
            self._db.transact(what, items, request_token)
        except ConditionFailed as failed:
            _lock_failed, old_lock = failed.reason(0)
            raise LeaseLost(codec.lost(group, token, old_lock, "settle the group")) from failed.error
