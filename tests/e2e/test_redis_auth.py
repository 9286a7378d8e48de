"""A Redis that requires a password: the run store, the broker (kombu) and a real Celery worker all
work with a password URL, and with an ACL user that may touch only the stack's key prefix (the
README's ACL, narrowed to the test's prefix), while a client without the password is refused."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fsm.run import RunStatus
from sandbox.redis_server import embedded_redis
from tests.e2e.conftest import Stack, _stack
from tests.factories import all_refs, group

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(params=["requirepass", "acl-user"])
def secured_url(request: pytest.FixtureRequest, prefix: str) -> Iterator[str]:
    password, user_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    # What the README's ACL grants, with the test's prefix for the project's (fo:) one.
    acl = (f"failover on >{user_password} ~{prefix}* &* +@all -@dangerous",)
    with embedded_redis(password=password, acl=acl) as url:
        if request.param == "requirepass":
            yield url
        else:
            yield url.replace(f"redis://:{password}@", f"redis://failover:{user_password}@")


@pytest.fixture
def secured_stack(secured_url: str, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    client = redis.Redis.from_url(secured_url)
    try:
        yield from _stack(secured_url, client, prefix, tmp_path, None)
    finally:
        client.close()


def test_a_failover_runs_through_a_real_worker_with_a_password_url(
    secured_url: str, secured_stack: Stack
) -> None:
    anonymous = redis.Redis.from_url("redis://" + secured_url.rsplit("@", 1)[1])
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    secured_stack.start_worker("w1")
    run = secured_stack.wait_finished(secured_stack.submit("CONSISTENCY"))
    assert run.status is RunStatus.SUCCESS, run.error
    g = group()
    assert all(secured_stack.clusters.role("site-b", ref) == "active" for ref in all_refs(g))
