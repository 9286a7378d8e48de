"""Keys and item <-> dataclass conversion for :mod:`workers.dynamo`, in DynamoDB's typed JSON.

Pure: builds and reads dicts only; no boto3, no I/O, no clock. The key formats and attribute names are
the table layout described in :mod:`workers.dynamo` (shared with the earlier Go operator); readers
tolerate missing optional attributes so that older items stay readable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from fsm import timeline
from fsm.models import GroupKey
from workers.ports import Heartbeat, HeldLock, HistoryRecord, JournalEntry, LockInfo

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef

    Item: TypeAlias = dict[str, AttributeValueTypeDef]

CONFIG_SK = "CONFIG"
LOCK_SK = "LOCK"
CLUSTER_PREFIX = "CLUSTER#"
HISTORY_PREFIX = "HISTORY#"
RUN_PREFIX = "RUN#"
VOLUMES_PREFIX = "VOLUMES#"
TTL_ATTRIBUTE = "expiresAt"


# --- keys ----------------------------------------------------------------------------------------


def group_pk(group: GroupKey) -> str:
    return f"GROUP#{group.operator_id}#{group.namespace}#{group.name}"


def cluster_sk(cluster: str) -> str:
    return f"{CLUSTER_PREFIX}{cluster}"


def history_sk(started_at: float, run_id: str) -> str:
    # Fixed width, so that string order is time order (epoch seconds with microseconds).
    return f"{HISTORY_PREFIX}{started_at:020.6f}#{run_id}"


def journal_prefix(run_id: str) -> str:
    return f"{RUN_PREFIX}{run_id}#"


def journal_sk(run_id: str, sequence: int) -> str:
    if sequence < 0:
        raise ValueError(f"journal sequence must not be negative, got {sequence}")
    return f"{journal_prefix(run_id)}{sequence:010d}"


def volumes_sk(token: int) -> str:
    return f"{VOLUMES_PREFIX}{token}"


def key(pk: str, sk: str) -> Item:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


# --- attribute values ----------------------------------------------------------------------------


def s(value: str) -> AttributeValueTypeDef:
    return {"S": value}


def n(value: float) -> AttributeValueTypeDef:
    """A DynamoDB number: plain decimal text (no exponent), exact for ints."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here")
    if isinstance(value, int):
        return {"N": str(value)}
    if not math.isfinite(value):
        raise ValueError(f"DynamoDB cannot store {value!r}")
    return {"N": format(Decimal(repr(value)), "f")}


def boolean(value: bool) -> AttributeValueTypeDef:
    return {"BOOL": value}


def str_list(values: Iterable[str]) -> AttributeValueTypeDef:
    return {"L": [{"S": v} for v in values]}


def str_map(values: Mapping[str, str]) -> AttributeValueTypeDef:
    return {"M": {k: {"S": v} for k, v in values.items()}}


def get_str(item: Mapping[str, Any], name: str, default: str = "") -> str:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else default


def get_opt_str(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else None


def get_float(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else None


def get_int(item: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(Decimal(value["N"])) if value and "N" in value else default


def get_bool(item: Mapping[str, Any], name: str) -> bool:
    value = item.get(name)
    return bool(value["BOOL"]) if value and "BOOL" in value else False


def get_str_list(item: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = item.get(name)
    if value and "L" in value:
        return tuple(str(v["S"]) for v in value["L"] if "S" in v)
    if value and "SS" in value:  # a string set, as another writer may have stored it
        return tuple(sorted(str(v) for v in value["SS"]))
    return ()


def get_str_map(item: Mapping[str, Any], name: str) -> dict[str, str]:
    value = item.get(name)
    if not value or "M" not in value:
        return {}
    return {k: str(v["S"]) for k, v in value["M"].items() if "S" in v}


# --- items ---------------------------------------------------------------------------------------


def lock_item(
    pk: str,
    *,
    token: int,
    holder: str,
    run_id: str,
    acquired_at: float,
    expires_at: float,
    digest: str | None = None,
) -> Item:
    """The LOCK item; ``digest`` is the run's pinned resources, which completion is conditioned on."""
    item: Item = {
        **key(pk, LOCK_SK),
        "holder": s(holder),
        "runId": s(run_id),
        "token": n(token),
        "acquiredAt": n(acquired_at),
        TTL_ATTRIBUTE: n(expires_at),
    }
    if digest is not None:
        item["digest"] = s(digest)
    return item


HELD_PREFIX = "HELD#"


def held_pk(holder: str) -> str:
    """The partition of the index of the locks taken under ``holder`` (one item per group)."""
    return f"{HELD_PREFIX}{holder}"


def held_item(group: GroupKey, *, holder: str, run_id: str, token: int, acquired_at: float) -> Item:
    return {
        **key(held_pk(holder), group_pk(group)),
        "operatorId": s(group.operator_id),
        "namespace": s(group.namespace),
        "name": s(group.name),
        "runId": s(run_id),
        "token": n(token),
        "acquiredAt": n(acquired_at),
    }


def held_from_item(item: Mapping[str, Any]) -> HeldLock:
    group = GroupKey(
        operator_id=get_str(item, "operatorId"),
        namespace=get_str(item, "namespace"),
        name=get_str(item, "name"),
    )
    return HeldLock(group=group, lock_owner=get_str(item, "runId"), token=get_int(item, "token"))


def lock_from_item(item: Mapping[str, Any]) -> LockInfo:
    return LockInfo(
        token=get_int(item, "token"),
        holder=get_str(item, "holder"),
        run_id=get_str(item, "runId"),
        acquired_at=get_float(item, "acquiredAt") or 0.0,
        expires_at=get_float(item, TTL_ATTRIBUTE) or 0.0,
    )


def history_item(pk: str, record: HistoryRecord) -> Item:
    item: Item = {
        **key(pk, history_sk(record.started_at, record.run_id)),
        "runId": s(record.run_id),
        "failover": s(record.failover),
        "group": s(record.group),
        "mode": s(record.mode),
        "sourceCluster": s(record.source_cluster),
        "targetCluster": s(record.target_cluster),
        "force": boolean(record.force),
        "reason": s(record.reason),
        "startedAt": n(record.started_at),
        "finishedAt": n(record.finished_at),
        "outcome": s(record.outcome),
        "message": s(record.message),
        "skipped": str_list(record.skipped),
    }
    if record.controls:
        item["controls"] = str_list(record.controls)
    if record.downtime_seconds is not None:
        item["downtimeSeconds"] = n(record.downtime_seconds)
    if record.failed_step is not None:
        item["failedStep"] = s(record.failed_step)
    if record.actor:
        item["actor"] = s(record.actor)
    if record.drill:
        item["drill"] = boolean(True)
    if record.timeline:  # at most 64 steps: a few KB
        item["timeline"] = s(timeline.encode(record.timeline))
    return item


def history_from_item(item: Mapping[str, Any]) -> HistoryRecord:
    return HistoryRecord(
        run_id=get_str(item, "runId"),
        failover=get_str(item, "failover"),
        group=get_str(item, "group"),
        mode=get_str(item, "mode"),
        source_cluster=get_str(item, "sourceCluster"),
        target_cluster=get_str(item, "targetCluster"),
        force=get_bool(item, "force"),
        reason=get_str(item, "reason"),
        started_at=get_float(item, "startedAt") or 0.0,
        finished_at=get_float(item, "finishedAt") or 0.0,
        outcome=get_str(item, "outcome"),
        downtime_seconds=get_float(item, "downtimeSeconds"),
        failed_step=get_opt_str(item, "failedStep"),
        message=get_str(item, "message"),
        skipped=get_str_list(item, "skipped"),
        actor=get_str(item, "actor"),
        drill=get_bool(item, "drill"),
        timeline=timeline.decode(get_str(item, "timeline")),
        controls=get_str_list(item, "controls"),
    )


def journal_item(pk: str, entry: JournalEntry, *, expires_at: float | None) -> Item:
    item: Item = {
        **key(pk, journal_sk(entry.run_id, entry.sequence)),
        "runId": s(entry.run_id),
        "sequence": n(entry.sequence),
        "stage": s(entry.stage),
        "state": s(entry.state),
        "at": n(entry.at),
        "runJson": s(entry.run_json),
    }
    if expires_at is not None:
        item[TTL_ATTRIBUTE] = n(expires_at)
    return item


def journal_from_item(item: Mapping[str, Any]) -> JournalEntry:
    return JournalEntry(
        run_id=get_str(item, "runId"),
        sequence=get_int(item, "sequence"),
        stage=get_str(item, "stage"),
        state=get_str(item, "state"),
        at=get_float(item, "at") or 0.0,
        run_json=get_str(item, "runJson"),
    )


def heartbeat_item(pk: str, heartbeat: Heartbeat) -> Item:
    return {
        **key(pk, cluster_sk(heartbeat.cluster)),
        "cluster": s(heartbeat.cluster),
        "health": s(heartbeat.health),
        "role": s(heartbeat.role),
        "lastHeartbeat": n(heartbeat.at),
        "resources": str_map(heartbeat.resources),
    }


def heartbeat_from_item(item: Mapping[str, Any]) -> Heartbeat:
    sk = get_str(item, "SK")
    return Heartbeat(
        cluster=get_str(item, "cluster") or sk.removeprefix(CLUSTER_PREFIX),
        health=get_str(item, "health"),
        role=get_str(item, "role"),
        at=get_float(item, "lastHeartbeat") or 0.0,
        resources=get_str_map(item, "resources"),
    )


# --- transactions --------------------------------------------------------------------------------


def _names(*attributes: str) -> dict[str, str]:
    return {f"#{a}": a for a in attributes}


def acquire_transaction(
    table: str,
    pk: str,
    *,
    counter: AttributeValueTypeDef | None,
    token: int,
    holder: str,
    run_id: str,
    now: float,
    expires_at: float,
    digest: str | None = None,
) -> list[TransactWriteItemTypeDef]:
    """Counter ``lockToken`` to ``token`` if still ``counter``, and the LOCK put if free or expired."""
    counter_values: dict[str, AttributeValueTypeDef] = {":current": counter} if counter is not None else {}
    return [
        {
            "Update": {
                "TableName": table,
                "Key": key(pk, CONFIG_SK),
                "UpdateExpression": "SET #lockToken = :token",
                "ConditionExpression": "#lockToken = :current"
                if counter
                else "attribute_not_exists(#lockToken)",
                "ExpressionAttributeNames": _names("lockToken"),
                "ExpressionAttributeValues": {":token": n(token), **counter_values},
            }
        },
        {
            "Put": {
                "TableName": table,
                "Item": lock_item(
                    pk,
                    token=token,
                    holder=holder,
                    run_id=run_id,
                    acquired_at=now,
                    expires_at=expires_at,
                    digest=digest,
                ),
                "ConditionExpression": "attribute_not_exists(PK) OR "
                "(#expiresAt < :now AND (attribute_not_exists(#token) OR #token < :token))",
                "ExpressionAttributeNames": _names(TTL_ATTRIBUTE, "token"),
                "ExpressionAttributeValues": {":now": n(now), ":token": n(token)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
    ]


def _release_item(table: str, pk: str, token: int, digest: str | None = None) -> TransactWriteItemTypeDef:
    """Delete the LOCK item if it still holds ``token`` (and, given one, was taken for ``digest``),
    returning it as it was when it does not."""
    if digest is None:
        condition, names, values = "#token = :token", _names("token"), {":token": n(token)}
    else:
        condition = "#token = :token AND #digest = :digest"
        names, values = _names("token", "digest"), {":token": n(token), ":digest": s(digest)}
    return {
        "Delete": {
            "TableName": table,
            "Key": key(pk, LOCK_SK),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def completion_transaction(
    table: str,
    pk: str,
    *,
    token: int,
    expected_owner: str,
    new_owner: str,
    record: HistoryRecord,
    digest: str | None = None,
    holder: str | None = None,
) -> list[TransactWriteItemTypeDef]:
    """[0] LOCK delete if ``token`` (and ``digest``: the lock was taken for the run's pinned resources),
    [1] owner flip if the owner is ``expected_owner``, [2] history put, and with ``holder`` [3] that
    holder's lock index entry of the group deleted (unconditioned: while the lock is ours, an entry of
    the group under this holder is ours or the stale one of a lock long gone).

    The lock comes first: should DynamoDB report only the first failed condition, the lost lease wins.
    """
    index: list[TransactWriteItemTypeDef] = (
        [] if holder is None else [{"Delete": {"TableName": table, "Key": key(held_pk(holder), pk)}}]
    )
    return [
        _release_item(table, pk, token, digest),
        {
            "Update": {
                "TableName": table,
                "Key": key(pk, CONFIG_SK),
                "UpdateExpression": "SET #ownerCluster = :new, #previousOwner = :expected, "
                "#version = if_not_exists(#version, :zero) + :one, #lastFailover = :at",
                "ConditionExpression": "#ownerCluster = :expected",
                "ExpressionAttributeNames": _names(
                    "ownerCluster", "previousOwner", "version", "lastFailover"
                ),
                "ExpressionAttributeValues": {
                    ":new": s(new_owner),
                    ":expected": s(expected_owner),
                    ":zero": n(0),
                    ":one": n(1),
                    ":at": n(record.finished_at),
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
        {"Put": {"TableName": table, "Item": history_item(pk, record)}},
        *index,
    ]


def volumes_transaction(table: str, pk: str, *, token: int, cluster: str) -> list[TransactWriteItemTypeDef]:
    """[0] LOCK still has ``token``, [1] VOLUMES#{token} put (idempotent)."""
    return [
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": key(pk, LOCK_SK),
                "ConditionExpression": "#token = :token",
                "ExpressionAttributeNames": _names("token"),
                "ExpressionAttributeValues": {":token": n(token)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        },
        {
            "Put": {
                "TableName": table,
                "Item": {**key(pk, volumes_sk(token)), "cluster": s(cluster), "token": n(token)},
            }
        },
    ]


def settlement_transaction(
    table: str, pk: str, *, token: int, owner: str, record: HistoryRecord
) -> list[TransactWriteItemTypeDef]:
    """[0] LOCK delete if ``token``, [1] owner set and divergence removed, [2] history put."""
    return [
        _release_item(table, pk, token),
        {
            "Update": {
                "TableName": table,
                "Key": key(pk, CONFIG_SK),
                "UpdateExpression": "SET #ownerCluster = :owner, "
                "#version = if_not_exists(#version, :zero) + :one, #lastFailover = :at REMOVE #diverged",
                "ExpressionAttributeNames": _names("ownerCluster", "version", "lastFailover", "diverged"),
                "ExpressionAttributeValues": {
                    ":owner": s(owner),
                    ":zero": n(0),
                    ":one": n(1),
                    ":at": n(record.finished_at),
                },
            }
        },
        {"Put": {"TableName": table, "Item": history_item(pk, record)}},
    ]


def lost(group: GroupKey, token: int, old_lock: Mapping[str, Any] | None, action: str) -> str:
    """Why ``action`` with ``token`` failed, from the LOCK item as it was (None: gone)."""
    if old_lock is None:
        return (
            f"cannot {action} of group {group} with token {token}: the lock is gone "
            "(released, or expired and removed)"
        )
    info = lock_from_item(old_lock)
    if info.token == token:  # only completion is also conditioned on the lock's digest
        return (
            f"cannot {action} of group {group} with token {token}: the lock was taken for other "
            "resources than the run's pinned ones (digest differs); nothing was changed"
        )
    until = datetime.fromtimestamp(info.expires_at, tz=UTC).isoformat(timespec="seconds")
    return (
        f"cannot {action} of group {group} with token {token}: the token differs, the lock is now "
        f"held by {info.holder!r} for run {info.run_id!r} with token {info.token} (lease until {until})"
    )
