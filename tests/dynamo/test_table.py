"""ensure_table against moto: creates once, is idempotent, survives a concurrent start; a missing table."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from fsm.models import GroupKey
from workers.dynamo import DynamoCoordination, ensure_table
from workers.errors import PermanentError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration


def test_creates_table_with_string_keys_on_demand_billing_and_ttl(
    client: DynamoDBClient, table_name: str
) -> None:
    ensure_table(client, table_name)

    table = client.describe_table(TableName=table_name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"PK": "HASH", "SK": "RANGE"}
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == {
        "PK": "S",
        "SK": "S",
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiresAt")


def test_second_call_changes_nothing_and_keeps_the_data(
    make_adapter: Callable[..., DynamoCoordination], group: GroupKey
) -> None:
    adapter = make_adapter()
    adapter.ensure_table()
    adapter.set_initial_owner(group, "east")
    assert adapter.calls["CreateTable"] == 1

    adapter.ensure_table()

    assert adapter.calls["CreateTable"] == 1  # found ACTIVE with TTL on: only described
    assert adapter.calls["UpdateTimeToLive"] == 1
    assert adapter.active_cluster(group) == "east"


def test_four_processes_starting_at_once_all_succeed(
    make_adapter: Callable[..., DynamoCoordination], client: DynamoDBClient, table_name: str
) -> None:
    adapters = [make_adapter() for _ in range(4)]
    start = threading.Barrier(4)

    def start_up(adapter: DynamoCoordination) -> None:
        start.wait(timeout=10)
        adapter.ensure_table()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(start_up, adapters))  # re-raises any thread's exception

    assert sum(a.calls["CreateTable"] for a in adapters) >= 1
    assert client.describe_table(TableName=table_name)["Table"]["TableStatus"] == "ACTIVE"
    names = client.list_tables()["TableNames"]
    assert names.count(table_name) == 1


def test_missing_table_is_permanent_and_names_the_init_command(
    make_adapter: Callable[..., DynamoCoordination], group: GroupKey
) -> None:
    adapter = make_adapter()  # no ensure_table

    with pytest.raises(PermanentError, match="failoverctl dynamodb init") as raised:
        adapter.active_cluster(group)

    assert adapter.table_name in raised.value.message
    assert isinstance(raised.value.__cause__, ClientError)
    assert adapter.calls["GetItem"] == 1  # not retried


def test_adapter_builds_its_own_client_from_endpoint_and_region(
    moto_endpoint: str, table_name: str, group: GroupKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default credential chain, as in production; monkeypatch restores the environment afterwards.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    with DynamoCoordination(table_name, endpoint_url=moto_endpoint, region_name="eu-west-1") as dynamo:
        dynamo.ensure_table()
        dynamo.set_initial_owner(group, "east")
        assert dynamo.active_cluster(group) == "east"
