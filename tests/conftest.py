"""Shared fixtures: a moto DynamoDB server, a real Redis (``REDIS_URL`` if it answers, else an
embedded one), a key prefix of each test's own (cleaned up afterwards: only that prefix, never
FLUSHALL), and fakeredis for unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from sandbox.dynamo import SerializedMotoServer, endpoint_of, moto_server
from sandbox.redis_server import OwnRedis, delete_prefixed, redis_url


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    with redis_url() as url:
        yield url


@pytest.fixture(scope="session")
def moto() -> Iterator[SerializedMotoServer]:
    """One moto DynamoDB server for the session (its ``calls`` count requests); tests use their own
    tables, since moto keeps its state per process."""
    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def dynamodb_endpoint(moto: SerializedMotoServer) -> str:
    return endpoint_of(moto)


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def real_redis(redis_server_url: str, prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server_url)
    try:
        yield client
    finally:
        delete_prefixed(client, prefix)
        client.close()


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A redis-server of the test's own, to kill and start again empty (a lost broker or run store)."""
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()
