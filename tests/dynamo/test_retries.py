"""Errors at the boundary: transient ones retried with bounded backoff and logged, the rest translated."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from structlog.testing import capture_logs

from fsm.models import GroupKey
from sandbox.dynamo import dynamodb_client
from workers.dynamo import DynamoCoordination
from workers.errors import LeaseLost, PermanentError, TemporaryError

from .conftest import FAST_RETRIES
from .scripted_server import Reply, ScriptedDynamo, error, scripted_dynamo

pytestmark = pytest.mark.integration

GROUP = GroupKey(operator_id="op-1", namespace="shop", name="checkout")
CONFLICT = error(
    "TransactionCanceledException",
    "Transaction cancelled, please refer cancellation reasons [None, TransactionConflict]",
    CancellationReasons=[{"Code": "None"}, {"Code": "TransactionConflict", "Message": "conflict"}],
)


@contextmanager
def adapter_on(endpoint: str, **options: Any) -> Iterator[DynamoCoordination]:
    client = dynamodb_client(endpoint, timeout=2.0)
    try:
        yield DynamoCoordination("failover", client=client, **{**FAST_RETRIES, **options})
    finally:
        client.close()


@contextmanager
def scripted_adapter(replies: list[Reply]) -> Iterator[tuple[DynamoCoordination, ScriptedDynamo]]:
    """An adapter (fast retries) on a server answering ``replies`` first, then ``200 {}``."""
    with scripted_dynamo(replies) as (endpoint, script), adapter_on(endpoint) as dynamo:
        yield dynamo, script


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_throttling_is_retried_until_it_passes_and_each_retry_is_logged() -> None:
    replies = [error("ThrottlingException", "Rate exceeded"), error("ProvisionedThroughputExceededException")]
    with scripted_adapter(replies) as (dynamo, script), capture_logs() as logs:
        assert dynamo.active_cluster(GROUP) is None  # the third answer: no item

    assert dynamo.calls["GetItem"] == 3
    assert len(script.targets) == 3  # botocore did not retry on its own as well
    retries = [entry for entry in logs if entry["event"] == "dynamodb_call_retrying"]
    assert [entry["attempt"] for entry in retries] == ["1 of 5", "2 of 5"]
    assert "ThrottlingException: Rate exceeded" in retries[0]["error"]
    assert "ProvisionedThroughputExceededException" in retries[1]["error"]
    assert all(entry["operation"] == "GetItem" for entry in retries)
    assert all(entry["what"] == "read owner of shop/checkout" for entry in retries)
    assert all(entry["next_action"].startswith("retrying in ") for entry in retries)


@pytest.mark.parametrize(
    "reply",
    [
        error("ThrottlingException"),
        error("ProvisionedThroughputExceededException"),
        error("RequestLimitExceeded"),
        error("InternalServerError", status=500),
        error("ServiceUnavailable", status=503),
        CONFLICT,
    ],
    ids=["throttling", "throughput", "request-limit", "internal", "unavailable", "transaction-conflict"],
)
def test_persistent_transient_errors_end_in_temporary_error_after_five_attempts(
    reply: Reply,
) -> None:
    code = reply[1]["__type"].rsplit("#", 1)[1]
    # A sixth attempt would succeed: the bound is what makes this raise.
    with (
        scripted_adapter([reply] * 5) as (dynamo, script),
        capture_logs() as logs,
        pytest.raises(TemporaryError, match="after 5 attempts") as raised,
    ):
        dynamo.mark_volumes_released(GROUP, token=3, cluster="east")

    assert dynamo.calls["TransactWriteItems"] == 5
    assert len(script.targets) == 5
    assert code in raised.value.message
    assert raised.value.__cause__ is not None
    cause = raised.value.__cause__.__cause__  # TemporaryError <- retry marker <- the SDK's error
    assert isinstance(cause, ClientError)
    assert cause.response["Error"]["Code"] == code
    gave_up = [entry for entry in logs if entry["event"] == "dynamodb_call_gave_up"]
    assert [entry["attempt"] for entry in gave_up] == ["5 of 5"]
    assert "TemporaryError" in gave_up[0]["next_action"]


def test_a_transaction_conflict_is_retried_and_then_succeeds() -> None:
    with scripted_adapter([CONFLICT]) as (dynamo, script):
        dynamo.mark_volumes_released(GROUP, token=3, cluster="east")

    assert script.targets == ["DynamoDB_20120810.TransactWriteItems"] * 2


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (error("ValidationException", "One or more parameter values were invalid"), "parameter values"),
        (error("AccessDeniedException", "not authorized to perform dynamodb:GetItem"), "IAM policy"),
        (error("ResourceNotFoundException", "Requested resource not found"), "failoverctl dynamodb init"),
        (error("SomethingNewException", "a code this adapter does not know"), "SomethingNewException"),
    ],
    ids=["validation", "access-denied", "table-missing", "unknown"],
)
def test_other_errors_are_permanent_and_not_retried(reply: Reply, says: str) -> None:
    with scripted_adapter([reply]) as (dynamo, _), pytest.raises(PermanentError, match=says) as raised:
        dynamo.active_cluster(GROUP)

    assert not isinstance(raised.value, TemporaryError)
    assert isinstance(raised.value.__cause__, ClientError)
    assert dynamo.calls["GetItem"] == 1  # a retry would have succeeded


def test_a_failed_condition_is_never_retried() -> None:
    failed = error("ConditionalCheckFailedException", "The conditional request failed")
    with scripted_adapter([failed]) as (dynamo, _), pytest.raises(LeaseLost, match="the lock is gone"):
        dynamo.renew_lease(GROUP, token=4, lease_seconds=30, now=100.0)

    assert dynamo.calls["UpdateItem"] == 1


def test_nothing_listening_ends_in_temporary_error_quickly() -> None:
    with adapter_on(f"http://127.0.0.1:{_unused_port()}") as dynamo:
        started = time.monotonic()
        with pytest.raises(TemporaryError, match="after 5 attempts") as raised:
            dynamo.active_cluster(GROUP)
        elapsed = time.monotonic() - started

    assert dynamo.calls["GetItem"] == 5
    assert elapsed < 3.0
    assert raised.value.__cause__ is not None
    assert isinstance(raised.value.__cause__.__cause__, EndpointConnectionError)


def test_without_a_count_retries_are_bounded_by_the_time_budget() -> None:
    with adapter_on(f"http://127.0.0.1:{_unused_port()}", max_attempts=None, retry_deadline=1.5) as dynamo:
        started = time.monotonic()
        with capture_logs() as logs, pytest.raises(TemporaryError, match=r"attempts in 1\.\ds") as raised:
            dynamo.active_cluster(GROUP)
        elapsed = time.monotonic() - started

    assert 1.0 < elapsed < 2.5  # no attempt starts once the next wait would pass the budget
    assert dynamo.calls["GetItem"] > 5  # the count no longer bounds them
    retries = [entry for entry in logs if entry["event"] == "dynamodb_call_retrying"]
    assert retries[0]["attempt"] == "1 (budget 1.5s)"
    assert "of budget left" in retries[0]["next_action"]
    assert "EndpointConnectionError" in raised.value.message


def test_an_outage_shorter_than_the_budget_is_waited_out() -> None:
    port = _unused_port()
    with adapter_on(f"http://127.0.0.1:{port}", max_attempts=None, retry_deadline=10.0) as dynamo:
        replies: list[Reply] = []

        def come_back() -> None:
            time.sleep(1.0)
            with scripted_dynamo(replies, port=port):
                time.sleep(3.0)

        thread = threading.Thread(target=come_back)
        thread.start()
        started = time.monotonic()
        try:
            assert dynamo.active_cluster(GROUP) is None
            elapsed = time.monotonic() - started
        finally:
            thread.join()
        assert 1.0 < elapsed < 3.0
        assert dynamo.calls["GetItem"] >= 2


def test_the_production_client_has_short_timeouts_and_no_sdk_retries() -> None:
    dynamo = DynamoCoordination("failover", endpoint_url="http://127.0.0.1:1", region_name="us-east-1")
    try:
        config = dynamo._db.client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
        assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    finally:
        dynamo.close()
