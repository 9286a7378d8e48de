"""Fixtures for the DynamoDB adapter tests: one moto server per session, a fresh table per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from fsm.models import GroupKey
from sandbox.dynamo import dynamodb_client
from workers.dynamo import DynamoCoordination

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Counted attempts (5) keep these tests short and exact; production bounds retries by time only.
FAST_RETRIES = {"backoff_initial": 0.001, "backoff_max": 0.005, "max_attempts": 5}


@pytest.fixture(scope="session")
def moto_endpoint(dynamodb_endpoint: str) -> str:
    """The session's moto server (tests/conftest.py), under the name these tests use."""
    return dynamodb_endpoint


@pytest.fixture(scope="session")
def client(moto_endpoint: str) -> Iterator[DynamoDBClient]:
    """One client for the session: boto3 clients are thread-safe."""
    dynamodb = dynamodb_client(moto_endpoint)
    yield dynamodb
    dynamodb.close()


@pytest.fixture
def table_name() -> str:
    return f"failover-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_adapter(client: DynamoDBClient, table_name: str) -> Callable[..., DynamoCoordination]:
    """A new adapter on this test's table (each with its own call counter), fast retries."""

    def make(**kwargs: object) -> DynamoCoordination:
        options: dict[str, object] = {**FAST_RETRIES, **kwargs}
        return DynamoCoordination(table_name, client=client, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def dynamo(make_adapter: Callable[..., DynamoCoordination]) -> DynamoCoordination:
    """An adapter on a freshly created table; its call counter starts at zero."""
    adapter = make_adapter()
    adapter.ensure_table()
    adapter.calls.clear()
    return adapter


@pytest.fixture
def group() -> GroupKey:
    return GroupKey(operator_id="op-1", namespace="shop", name="checkout")
