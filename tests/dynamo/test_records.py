"""History, journal and heartbeats: round trips, ordering, idempotent puts and real pagination."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fsm.models import GroupKey
from workers.dynamo import DynamoCoordination
from workers.ports import Heartbeat

from .factories import history_record, journal_entry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

PAGE_FILLER = 60_000  # bytes per item: DynamoDB (and moto) stop a Query page at 1 MB


def test_history_round_trip_keeps_every_field(dynamo: DynamoCoordination, group: GroupKey) -> None:
    full = history_record(
        "run-1",
        force=True,
        outcome="FAILED",
        failed_step="scale-down west/checkout",
        message="timed out",
        skipped=("flux", "network"),
        downtime_seconds=None,
    )
    minimal = history_record("run-2", started_at=200.0, failed_step=None, skipped=())

    dynamo.record_history(group, full)
    dynamo.record_history(group, minimal)

    assert dynamo.history(group) == [minimal, full]


def test_history_is_newest_first_limited_and_idempotent(dynamo: DynamoCoordination, group: GroupKey) -> None:
    # Start times of different magnitudes: string order of the keys must still be time order.
    starts = [9.5, 100.0, 1_000.25, 99_999.0, 1_700_000_000.125]
    for index, start in enumerate(starts):
        dynamo.record_history(group, history_record(f"run-{index}", started_at=start))
    dynamo.record_history(group, history_record("run-4", started_at=starts[4]))  # a repeat: no new item

    assert [r.started_at for r in dynamo.history(group)] == sorted(starts, reverse=True)
    dynamo.calls.clear()
    assert [r.run_id for r in dynamo.history(group, limit=2)] == ["run-4", "run-3"]
    assert dynamo.calls["Query"] == 1
    assert dynamo.history(group, limit=0) == []


def test_history_follows_pages(dynamo: DynamoCoordination, group: GroupKey) -> None:
    records = [
        history_record(f"run-{i:02d}", started_at=1000.0 + i, message="x" * PAGE_FILLER) for i in range(25)
    ]
    for record in records:
        dynamo.record_history(group, record)
    dynamo.calls.clear()

    assert dynamo.history(group, limit=50) == records[::-1]
    assert dynamo.calls["Query"] == 2  # 1.5 MB cannot come back in one 1 MB page


def test_journal_round_trip_in_sequence_order(dynamo: DynamoCoordination, group: GroupKey) -> None:
    entries = [journal_entry("run-1", sequence) for sequence in (2, 0, 11, 1)]
    for entry in entries:
        dynamo.write_journal(group, entry)
    dynamo.write_journal(group, entries[0])  # a redelivered write
    dynamo.write_journal(group, journal_entry("run-10", 0))  # a run whose id extends run-1's
    dynamo.write_journal(group, journal_entry("run", 5))

    assert [e.sequence for e in dynamo.journal(group, "run-1")] == [0, 1, 2, 11]
    assert dynamo.journal(group, "run-1")[2] == entries[0]
    assert dynamo.journal(group, "run-10") == [journal_entry("run-10", 0)]
    assert dynamo.journal(group, "missing") == []


def test_journal_entries_expire_by_ttl(
    dynamo: DynamoCoordination, client: DynamoDBClient, group: GroupKey
) -> None:
    dynamo.write_journal(group, journal_entry("run-1", 3))

    pk = f"GROUP#{group.operator_id}#{group.namespace}#{group.name}"
    item = client.get_item(
        TableName=dynamo.table_name, Key={"PK": {"S": pk}, "SK": {"S": "RUN#run-1#0000000003"}}
    )["Item"]
    assert float(item["expiresAt"]["N"]) == 1003.0 + 30 * 86400


def test_journal_follows_pages(dynamo: DynamoCoordination, group: GroupKey) -> None:
    entries = [journal_entry("run-big", i, run_json="{" + " " * PAGE_FILLER + "}") for i in range(25)]
    for entry in entries:
        dynamo.write_journal(group, entry)
    dynamo.calls.clear()

    assert dynamo.journal(group, "run-big") == entries
    assert dynamo.calls["Query"] == 2


def test_heartbeats_keep_every_cluster_and_the_latest_beat(
    dynamo: DynamoCoordination, group: GroupKey
) -> None:
    dynamo.write_heartbeat(group, Heartbeat(cluster="east", health="healthy", role="active", at=10.0))
    dynamo.write_heartbeat(group, Heartbeat(cluster="west", health="healthy", role="passive", at=11.0))
    latest_east = Heartbeat(
        cluster="east",
        health="degraded",
        role="active",
        at=20.5,
        resources={"Deployment shop/checkout": "Ready", "VolumeReplication shop/data": "primary"},
    )
    dynamo.write_heartbeat(group, latest_east)
    other_group = GroupKey(operator_id=group.operator_id, namespace=group.namespace, name="payments")
    dynamo.write_heartbeat(other_group, Heartbeat(cluster="south", health="healthy", role="active", at=1.0))

    beats = {b.cluster: b for b in dynamo.heartbeats(group)}

    assert beats == {
        "east": latest_east,
        "west": Heartbeat(cluster="west", health="healthy", role="passive", at=11.0),  # stale, still there
    }
    assert [b.cluster for b in dynamo.heartbeats(other_group)] == ["south"]
