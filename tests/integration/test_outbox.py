"""The transactional outbox on a real Redis (:mod:`workers.outbox`): the message a commit pushes is
the one Celery's ``send_task`` stores, and it is pushed by a commit that lands, never by one that
loses its compare-and-set. (``tests/e2e/test_engine_e2e.py`` has a real worker run such a message.)"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from celery import Celery

from fsm.decide import Event, EventKind, decide
from fsm.run import new_run
from sandbox.stack import FAST_TIMING, sandbox_signer, stack_settings
from tests.factories import failover, group
from workers.app import create_app
from workers.messages import CelerySender, Outgoing
from workers.outbox import BrokerOutbox
from workers.settings import Settings
from workers.store import RunStore

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(redis_server_url: str, prefix: str) -> Settings:
    return stack_settings(redis_server_url, prefix, timing=FAST_TIMING, per_cluster_queues=True)


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    built = create_app(settings)
    try:
        yield built
    finally:
        built.close()


def _stored(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def _without_ids(message: dict[str, Any]) -> dict[str, Any]:
    """The message with what differs from one send to the next left out (ids, tags, ETA)."""
    headers = {k: v for k, v in message["headers"].items() if k not in ("id", "root_id", "eta")}
    ignored = ("correlation_id", "delivery_tag")
    properties = {k: v for k, v in message["properties"].items() if k not in ignored}
    return {**message, "headers": headers, "properties": properties}


@pytest.mark.parametrize(("countdown", "cluster"), [(0.0, None), (1.5, "site-b")])
def test_the_message_is_the_one_send_task_stores(
    app: Celery, settings: Settings, real_redis: redis.Redis, countdown: float, cluster: str | None
) -> None:
    queue = f"{settings.queue}.{cluster}" if cluster else settings.queue
    key = f"{settings.broker_prefix}{queue}"
    CelerySender(app, settings).send("failover.validate", "r1", 3, countdown=countdown, cluster=cluster)
    sent_at = time.time()
    outgoing = BrokerOutbox(app, settings).outgoing(
        "failover.validate", "r1", 3, countdown=countdown, cluster=cluster
    )
    assert outgoing is not None and outgoing.key == key
    [by_celery] = _stored(real_redis, key)
    ours = json.loads(outgoing.payload)

    assert _without_ids(ours) == _without_ids(by_celery)
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert ours["headers"]["id"] != by_celery["headers"]["id"]
    assert ours["properties"]["delivery_tag"] != by_celery["properties"]["delivery_tag"]
    assert ours["headers"]["argsrepr"] == "['r1', 3]"
    if countdown:
        eta = ours["headers"]["eta"]
        assert eta is not None and by_celery["headers"]["eta"] is not None
        assert abs(datetime.fromisoformat(eta).timestamp() - (sent_at + countdown)) < 1.0
    else:
        assert ours["headers"]["eta"] is None and by_celery["headers"]["eta"] is None


def test_a_commit_pushes_its_message_only_when_it_lands(
    app: Celery, settings: Settings, real_redis: redis.Redis, prefix: str
) -> None:
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
    run = new_run(run_id="r1", failover=failover(), group=group(), source_cluster="site-a", now=100.0)
    assert store.create(run)
    stored = store.load("r1")
    assert stored is not None
    decision = decide(stored, Event(kind=EventKind.START), 101.0)
    assert decision.dispatch is not None
    outbox = BrokerOutbox(app, settings)

    def message(ticket: int) -> Outgoing:
        built = outbox.outgoing("failover.validate", "r1", ticket, countdown=0.0, cluster="site-a")
        assert built is not None
        return built

    first = message(decision.dispatch.ticket)
    committed = store.commit(decision.run, expected_version=stored.version, outgoing=first)
    assert committed is not None
    assert real_redis.lrange(first.key, 0, -1) == [first.payload.encode()]

    # A second commit from the same version loses the compare-and-set: its message is not pushed.
    loser = message(decision.dispatch.ticket + 1)
    assert store.commit(decision.run, expected_version=stored.version, outgoing=loser) is None
    assert real_redis.lrange(first.key, 0, -1) == [first.payload.encode()]
    assert store.load("r1") == committed


def test_there_is_no_outbox_when_the_broker_is_another_redis(app: Celery, settings: Settings) -> None:
    elsewhere = settings.model_copy(update={"broker_url": "redis://127.0.0.1:6399/0"})
    assert (
        BrokerOutbox(app, elsewhere).outgoing("failover.validate", "r1", 1, countdown=0, cluster=None) is None
    )
    same = settings.model_copy(update={"broker_url": settings.redis_url})
    assert (
        BrokerOutbox(app, same).outgoing("failover.validate", "r1", 1, countdown=0, cluster=None) is not None
    )


def test_flower_still_hears_of_a_pushed_message_when_task_events_are_on(
    settings: Settings, real_redis: redis.Redis, prefix: str
) -> None:
    """Celery's ``task-sent`` event, which ``send_task`` publishes with task events on, is published
    for a message the commit pushed too (after the commit: monitoring only)."""
    with_events = settings.model_copy(update={"task_events": True})
    app = create_app(with_events)
    listener = real_redis.pubsub()
    try:
        listener.psubscribe(f"{prefix}*celeryev*")
        listener.get_message(timeout=1.0)  # the subscription's confirmation
        outbox = BrokerOutbox(app, with_events)
        outgoing = outbox.outgoing("failover.validate", "r1", 3, countdown=0.0, cluster=None)
        assert outgoing is not None and outgoing.sent_event is not None
        outbox.sent(outgoing)
        deadline = time.monotonic() + 5
        message = None
        while message is None and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.5)
    finally:
        listener.close()
        app.close()
    assert message is not None and message["channel"].endswith(b"celeryev/task.sent")
    envelope = json.loads(message["data"])
    event = json.loads(base64.b64decode(envelope["body"]))
    assert event["type"] == "task-sent" and event["uuid"] == json.loads(outgoing.payload)["headers"]["id"]
    assert (event["name"], event["args"], event["queue"]) == (
        "failover.validate",
        "['r1', 3]",
        settings.queue,
    )
