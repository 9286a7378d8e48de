"""The :class:`~workers.ports.Coordination` port on DynamoDB (boto3): what each operation reads and writes.

It stores what must outlive any one site; it never decides anything (that is ``fsm``'s job) and never
reads the clock: every timestamp comes from the caller. Requests go through
:class:`workers.dynamo_table.DynamoTable` (the only module that imports boto3), which
retries transient SDK errors with bounded exponential backoff and jitter and translates the rest into
:mod:`workers.errors`; here, failed conditions become the port's errors (LockHeld, LeaseLost, ...).

Table layout (one table, string keys ``PK``/``SK``, on-demand billing, TTL on ``expiresAt``; the key
design of the earlier Go operator; readers tolerate missing attributes).
``PK = GROUP#{operatorID}#{namespace}#{name}``:

=================================  ==================================================================
SK                                 attributes
=================================  ==================================================================
``CONFIG``                         ownerCluster, previousOwner, version (N, +1 per flip),
                                   lastFailover (N), lockToken (N, the fencing counter), and whatever
                                   else the group config holds (suspended, timeouts) untouched
``LOCK``                           holder, runId, token (N), acquiredAt (N), expiresAt (N; also the
                                   TTL, so an expired lock may vanish: harmless, the counter lives
                                   on CONFIG)
``CLUSTER#{cluster}``              cluster, health, role, lastHeartbeat (N), resources (map)
``HISTORY#{start:020.6f}#{run}``   runId, failover, group, mode, sourceCluster, targetCluster, force,
                                   reason, startedAt, finishedAt, downtimeSeconds, outcome,
                                   failedStep, message, skipped (list)
``RUN#{run}#{sequence:010d}``      runId, sequence, stage, state, at (N), runJson, expiresAt (TTL)
``VOLUMES#{token}``                cluster (that released the volumes under this token), token
=================================  ==================================================================

``PK = HELD#{holder}``, ``SK = GROUP#...`` (the group's PK): the index of the locks taken under one
holder (operatorId, namespace, name, runId, token, acquiredAt), put in the transaction that takes the
lock, so that a site finds the runs it must rebuild after losing Redis with one Query
(:meth:`DynamoCoordination.held_locks`, O(locks held)). An entry whose lock is gone is dropped by
the completion transaction when the run names its holder (the workers do), else by the recovery
sweep that finds it (``forget_held_lock``, conditioned on its runId): release and settlement need
not know the holder.

Consistency of each operation (after Patroni's ``AbstractDCS``); reads that decide are
``ConsistentRead``; queries follow ``LastEvaluatedKey``; nothing scans.

=========================  =========================================================================
operation                  how
=========================  =========================================================================
set_initial_owner          CAS: UpdateItem on CONFIG if ``attribute_not_exists(ownerCluster)``
adopt                      CAS: ONE TransactWriteItems: CONFIG owner set if
                           ``attribute_not_exists(ownerCluster)`` + ADOPTED history put
                           (``workers.dynamo_owner``, with divergence and its settlement)
acquire_lock               CAS: consistent BatchGetItem of CONFIG and LOCK (a live lock is refused
                           right there), then ONE TransactWriteItems: CONFIG ``lockToken`` to the new
                           token (if unchanged) and the LOCK put (if absent or ``expiresAt < now``);
                           tokens only grow, even across takeovers and releases
renew_lease, release_lock  CAS: UpdateItem / DeleteItem on LOCK if ``token = :token``
complete_failover          CAS: ONE TransactWriteItems: LOCK delete (if token = :token) + owner flip
                           (if owner = expected) + history put; the cancellation says which failed
mark_volumes_released      CAS: TransactWriteItems: ConditionCheck LOCK token + put VOLUMES#{token}
held_locks                 Query of the holder's index partition (consistent)
active_cluster, lock_info  strongly consistent GetItem
volumes_released           strongly consistent GetItem
write_journal              idempotent PutItem keyed by run and sequence
record_history             idempotent PutItem keyed by start time and run id
write_heartbeat            best-effort PutItem; ``heartbeats`` reads all, readers judge staleness
=========================  =========================================================================

``calls`` counts requests by DynamoDB operation, one per HTTP attempt (retries included).

Global tables: DynamoDB's conditions and transactions are atomic within the region that serves the
request only. With multi-region eventual consistency two sites writing to two replicas can both win a
condition; point every site's lock traffic at one region, or use multi-region strong consistency.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import structlog

from fsm.models import GroupKey
from workers import dynamo_codec as codec
from workers.dynamo_owner import OwnerRecords
from workers.dynamo_table import ConditionFailed, DynamoTable
from workers.errors import CoordinationConflict, LeaseLost, LockHeld
from workers.ports import (
    Heartbeat,
    HeldLock,
    HistoryRecord,
    JournalEntry,
    LockGrant,
    LockInfo,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from workers.ports import Coordination
    from workers.settings import Settings

log = structlog.get_logger(__name__)

_CAS_ROUNDS: Final = 3  # read-then-write rounds of acquire_lock when the lock moved in between
_DAY: Final = 86400.0


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def _names(*attributes: str) -> dict[str, str]:
    return {f"#{a}": a for a in attributes}


class DynamoCoordination(OwnerRecords):
    """Coordination on one DynamoDB table. Thread-safe; ``calls`` counts requests by operation."""

    def __init__(
        self,
        table_name: str,
        *,
        journal_ttl_seconds: float | None = 30 * _DAY,
        **table: Any,
    ) -> None:
        """``table`` are :class:`workers.dynamo_table.DynamoTable`'s options: ``endpoint_url``,
        ``region_name``, ``client`` (the caller closes it; turn botocore's own retries off), the retry
        budget ``retry_deadline`` (and ``max_attempts``), the backoff and ``request_timeout``.
        Journal entries expire ``journal_ttl_seconds`` after their ``at`` (None: never).
        """
        self._db = DynamoTable(table_name, **table)
        self._table = table_name
        self._client: DynamoDBClient = self._db.client
        self._journal_ttl = journal_ttl_seconds
        self.calls = self._db.calls

    @classmethod
    def from_settings(cls, settings: Settings) -> DynamoCoordination:
        """The table of ``settings`` (name, endpoint, region): what workers and producers both use."""
        return cls(
            settings.dynamodb_table,
            endpoint_url=settings.dynamodb_endpoint_url,
            region_name=settings.aws_region,
            retry_deadline=settings.dynamodb_retry_seconds,
        )

    @property
    def table_name(self) -> str:
        return self._table

    def close(self) -> None:
        """Close the client if this adapter created it."""
        self._db.close()

    def __enter__(self) -> DynamoCoordination:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ensure_table(self) -> None:
        """Create the table if missing (idempotent, safe from many processes), wait for ACTIVE, enable TTL."""
        self._db.ensure()

    # --- owner -----------------------------------------------------------------------------------

    def active_cluster(self, group: GroupKey) -> str | None:
        """The group's active cluster (consistent read), or None if no owner was ever recorded."""
        item = self._db.get(codec.group_pk(group), codec.CONFIG_SK, f"read owner of {group}")
        return codec.get_opt_str(item, "ownerCluster") if item else None

    # --- lock ------------------------------------------------------------------------------------

    def acquire_lock(
        self,
        group: GroupKey,
        *,
        holder: str,
        run_id: str,
        lease_seconds: float,
        now: float,
        digest: str | None = None,
    ) -> LockGrant:
        """Take the lock if free or expired, with a fencing token larger than any before; else LockHeld."""
        pk = codec.group_pk(group)
        what = f"acquire lock of {group} for {holder!r} (run {run_id!r})"
        expires_at = now + lease_seconds
        for _ in range(_CAS_ROUNDS):
            # A consistent read first: a held lock is refused without a transaction, and the new token
            # goes past both the counter and the token of an expired lock (written by older code).
            current = self._db.get_many(pk, [codec.CONFIG_SK, codec.LOCK_SK], what)
            config = current.get(codec.CONFIG_SK, {})
            old = codec.lock_from_item(current[codec.LOCK_SK]) if codec.LOCK_SK in current else None
            if old is not None and old.expires_at >= now:
                raise self._held(group, old, now)
            token = max(codec.get_int(config, "lockToken"), old.token if old else 0) + 1
            items = codec.acquire_transaction(
                self._table,
                pk,
                counter=config.get("lockToken"),
                token=token,
                holder=holder,
                run_id=run_id,
                now=now,
                expires_at=expires_at,
                digest=digest,
            )
            # The holder's lock index, in the same transaction: a held lock is always findable.
            index = codec.held_item(group, holder=holder, run_id=run_id, token=token, acquired_at=now)
            items.append({"Put": {"TableName": self._table, "Item": index}})
            try:
                self._db.transact(what, items, str(uuid.uuid4()))
            except ConditionFailed as failed:
                lock_failed, lock_item = failed.reason(1)
                winner = codec.lock_from_item(lock_item) if lock_failed and lock_item else None
                if winner is not None and winner.expires_at >= now:
                    raise self._held(group, winner, now) from failed.error
                continue  # the counter or the lock moved between our read and our write: read again
            return LockGrant(token=token, holder=holder, run_id=run_id, expires_at=expires_at)
        raise CoordinationConflict(
            f"the lock of group {group} changed under {holder!r} {_CAS_ROUNDS} times in a row "
            "between read and write; another run is acquiring and releasing it concurrently"
        )

    def _held(self, group: GroupKey, info: LockInfo, now: float) -> LockHeld:
        return LockHeld(
            f"group {group} is locked by {info.holder!r} for run {info.run_id!r} (token {info.token}); "
            f"its lease expires in {info.expires_at - now:.1f}s, at {_when(info.expires_at)} "
            f"({info.expires_at:.3f})",
            holder=info.holder,
            expires_at=info.expires_at,
        )

    def renew_lease(self, group: GroupKey, *, token: int, lease_seconds: float, now: float) -> float:
        """Extend the lease held with ``token``; returns the new expiry, or raises LeaseLost saying why."""
        expires_at = now + lease_seconds
        request = partial(
            self._client.update_item,
            TableName=self._table,
            Key=codec.key(codec.group_pk(group), codec.LOCK_SK),
            UpdateExpression="SET #expiresAt = :expires",
            ConditionExpression="#token = :token",
            ExpressionAttributeNames=_names("expiresAt", "token"),
            ExpressionAttributeValues={":expires": codec.n(expires_at), ":token": codec.n(token)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        try:
            self._db.call("UpdateItem", f"renew lease of {group} (token {token})", request)
        except ConditionFailed as failed:
            raise LeaseLost(codec.lost(group, token, failed.item, "renew the lease")) from failed.error
        return expires_at

    def release_lock(self, group: GroupKey, *, token: int) -> bool:
        """Release the lock held with ``token``; False (no error) when it is no longer ours."""
        request = partial(
            self._client.delete_item,
            TableName=self._table,
            Key=codec.key(codec.group_pk(group), codec.LOCK_SK),
            ConditionExpression="#token = :token",
            ExpressionAttributeNames=_names("token"),
            ExpressionAttributeValues={":token": codec.n(token)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        try:
            self._db.call("DeleteItem", f"release lock of {group} (token {token})", request)
        except ConditionFailed as failed:
            if failed.item is None and failed.attempt > 1:
                return True  # our earlier attempt deleted it and its answer was lost
            log.info(
                "dynamodb_lock_not_released",
                group=str(group),
                token=token,
                reason=codec.lost(group, token, failed.item, "release the lock"),
            )
            return False
        return True

    def held_locks(self, holder: str) -> list[HeldLock]:
        """The index of the locks taken under ``holder`` (one Query, O(entries)); some may be gone."""
        items = self._db.query(codec.held_pk(holder), "GROUP#", f"read locks held by {holder!r}")
        return [codec.held_from_item(item) for item in items]

    def forget_held_lock(self, holder: str, group: GroupKey, lock_owner: str) -> None:
        """Drop ``holder``'s index entry of ``group`` if it still names ``lock_owner``."""
        request = partial(
            self._client.delete_item,
            TableName=self._table,
            Key=codec.key(codec.held_pk(holder), codec.group_pk(group)),
            ConditionExpression="#runId = :run",
            ExpressionAttributeNames=_names("runId"),
            ExpressionAttributeValues={":run": codec.s(lock_owner)},
        )
        try:
            self._db.call("DeleteItem", f"forget the lock of {group} held by {holder!r}", request)
        except ConditionFailed:
            return  # gone already, or a newer lock of the group under this holder

    def lock_info(self, group: GroupKey) -> LockInfo | None:
        """The LOCK item as stored (consistent read), expired or not; None if there is none."""
        item = self._db.get(codec.group_pk(group), codec.LOCK_SK, f"read lock of {group}")
        return codec.lock_from_item(item) if item else None

    def complete_failover(
        self,
        group: GroupKey,
        *,
        token: int,
        expected_owner: str,
        new_owner: str,
        record: HistoryRecord,
        digest: str | None = None,
        holder: str | None = None,
    ) -> None:
        """Flip the owner, write history and release the lock in one transaction (conditioned on the
        lock's ``digest`` when given), dropping ``holder``'s lock index entry of the group in it too
        (else the recovery sweep drops it later: two more calls), or raise naming why."""
        pk = codec.group_pk(group)
        what = f"complete failover of {group} from {expected_owner!r} to {new_owner!r} (token {token})"
        items = codec.completion_transaction(
            self._table,
            pk,
            token=token,
            expected_owner=expected_owner,
            new_owner=new_owner,
            record=record,
            digest=digest,
            holder=holder,
        )
        # The same request token on every retry: DynamoDB answers a repeat of a done transaction with success.
        request_token = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{self._table}/{pk}/{token}/{record.run_id}/{new_owner}")
        )
        try:
            self._db.transact(what, items, request_token)
        except ConditionFailed as failed:
            lock_failed, old_lock = failed.reason(0)
            owner_failed, old_config = failed.reason(1)
            actual = codec.get_opt_str(old_config or {}, "ownerCluster")
            owner_text = (
                f"the owner condition failed: expected the active cluster to be {expected_owner!r}, "
                f"but it is {actual!r}"
                if actual
                else f"the owner condition failed: expected {expected_owner!r}, but no owner is recorded"
            )
            if lock_failed:
                message = codec.lost(group, token, old_lock, "complete the failover")
                message = f"{message}; also {owner_text}" if owner_failed else message
                raise LeaseLost(message) from failed.error
            if owner_failed:
                raise CoordinationConflict(
                    f"cannot complete the failover of group {group} to {new_owner!r}: {owner_text}; "
                    "nothing was changed (owner, history and lock are as before)"
                ) from failed.error
            raise CoordinationConflict(f"{what} was cancelled: {failed.reasons}") from failed.error

    # --- volume handshake ------------------------------------------------------------------------

    def mark_volumes_released(self, group: GroupKey, *, token: int, cluster: str) -> None:
        """Record that ``cluster`` released the volumes, if ``token`` is still the current lock token."""
        pk = codec.group_pk(group)
        items = codec.volumes_transaction(self._table, pk, token=token, cluster=cluster)
        what = f"mark volumes of {group} released by {cluster!r} (token {token})"
        try:
            self._db.transact(what, items, str(uuid.uuid4()))
        except ConditionFailed as failed:
            _, old_lock = failed.reason(0)
            message = codec.lost(group, token, old_lock, "mark the volumes released")
            raise LeaseLost(message) from failed.error

    def volumes_released(self, group: GroupKey, *, token: int) -> str | None:
        """The cluster that released the volumes under ``token`` (consistent read), or None if not yet."""
        item = self._db.get(
            codec.group_pk(group), codec.volumes_sk(token), f"read volume handshake of {group}"
        )
        return codec.get_opt_str(item, "cluster") if item else None

    # --- heartbeats, history, journal ------------------------------------------------------------

    def write_heartbeat(self, group: GroupKey, heartbeat: Heartbeat) -> None:
        """Put the cluster's heartbeat (best effort; overwrites only that cluster's own record)."""
        item = codec.heartbeat_item(codec.group_pk(group), heartbeat)
        self._db.put(item, f"heartbeat of {heartbeat.cluster!r}")

    def heartbeats(self, group: GroupKey) -> list[Heartbeat]:
        """Every cluster's last heartbeat, stale ones included: readers judge staleness."""
        items = self._db.query(codec.group_pk(group), codec.CLUSTER_PREFIX, f"read heartbeats of {group}")
        return [codec.heartbeat_from_item(item) for item in items]

    def record_history(self, group: GroupKey, record: HistoryRecord) -> None:
        """Put one finished run (idempotent: keyed by start time and run id)."""
        self._db.put(codec.history_item(codec.group_pk(group), record), f"history of run {record.run_id!r}")

    def history(self, group: GroupKey, *, limit: int = 50) -> list[HistoryRecord]:
        """Up to ``limit`` finished runs, newest first."""
        if limit <= 0:
            return []
        pk = codec.group_pk(group)
        what = f"read history of {group}"
        items = self._db.query(pk, codec.HISTORY_PREFIX, what, newest_first=True, limit=limit)
        return [codec.history_from_item(item) for item in items[:limit]]

    def write_journal(self, group: GroupKey, entry: JournalEntry) -> None:
        """Put one journal entry (idempotent: keyed by run and sequence)."""
        expires_at = entry.at + self._journal_ttl if self._journal_ttl is not None else None
        item = codec.journal_item(codec.group_pk(group), entry, expires_at=expires_at)
        self._db.put(item, f"journal {entry.run_id!r} #{entry.sequence}")

    def journal(self, group: GroupKey, run_id: str) -> list[JournalEntry]:
        """The run's journal entries in sequence order."""
        pk = codec.group_pk(group)
        items = self._db.query(pk, codec.journal_prefix(run_id), f"read journal of {run_id!r}")
        entries = [codec.journal_from_item(item) for item in items]
        return [e for e in entries if e.run_id == run_id]  # a '#' in another run's id cannot leak in


def ensure_table(client: DynamoDBClient, table_name: str) -> None:
    """Create ``table_name`` if missing, wait for ACTIVE, enable TTL (DynamoCoordination.ensure_table)."""
    DynamoCoordination(table_name, client=client).ensure_table()


if TYPE_CHECKING:

    def _implements_the_port(adapter: DynamoCoordination) -> Coordination:
        return adapter  # mypy checks DynamoCoordination against the Coordination protocol here
