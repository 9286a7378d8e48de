"""The waker's informer loop (producers.waker) on a scripted client: list, watch from the list's
resourceVersion, resume from the last one seen, relist on 410 Gone, back off on errors; and the
resync that catches an object that was ready before its run registered. The registry is the Redis
adapter on fakeredis, the sender records messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from fsm.kinds import KindInfo
from fsm.plan import Step
from producers.kube import ResourceGone
from producers.waker import WaitWaker
from tests.unit.test_engine import ListSender
from tests.unit.test_waits import deployment
from workers.errors import ClusterUnreachable
from workers.ports import Role
from workers.wait_store import RedisWaits
from workers.waits import Registration, WaitTarget, Wakes

WEB = WaitTarget("c", "Deployment", "shop", "web")


def eventually(condition: Callable[[], bool], *, timeout: float) -> None:
    """Wait until ``condition`` holds (the timeout only bounds a hang; nothing is timed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def with_rv(obj: dict[str, Any], rv: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv}}


class ScriptedClient:
    """Lists and watches as scripted: each watch call takes the next script entry (a list of events
    or an exception); with none left it waits until stopped."""

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]], watches: list[Any]) -> None:
        self.lists, self.watches = lists, watches
        self.watched_from: list[str] = []
        self._stopped = threading.Event()

    def list(self, resource: KindInfo) -> tuple[list[dict[str, Any]], str]:
        assert resource.kind == "Deployment"
        return self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]

    def watch(
        self, resource: KindInfo, resource_version: str, *, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self._stopped.wait(timeout_seconds)
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step

    def stop_watch(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        self._stopped.set()


@pytest.fixture
def registry(fake_redis: fakeredis.FakeRedis) -> RedisWaits:
    waits = RedisWaits(fake_redis, prefix="w:")
    registration = Registration(step=Step.WAIT_READY, ticket=4, role=Role.ACTIVE, cluster="c", targets=(WEB,))
    waits.register("run-1", [WEB], registration, ttl=60)
    return waits


def waker_for(client: ScriptedClient, registry: RedisWaits, sender: ListSender, **options: Any) -> WaitWaker:
    return WaitWaker(
        Wakes(registry, sender),
        ["c"],
        lambda _name: client,  # type: ignore[arg-type,return-value]
        kinds=("Deployment",),
        watch_timeout=1,
        backoff_initial=0.01,
        backoff_max=0.02,
        **options,
    )


def test_a_watch_event_wakes_the_run_after_a_relist_and_an_error_resuming_where_it_was(
    registry: RedisWaits,
) -> None:
    not_ready, ready = deployment("web", ready_replicas=0), deployment("web", ready_replicas=2)
    client = ScriptedClient(
        lists=[([with_rv(not_ready, "1")], "1"), ([with_rv(not_ready, "2")], "2")],
        watches=[
            ResourceGone("410 Gone", cluster="c"),
            [{"type": "MODIFIED", "object": with_rv(not_ready, "3")}],
            ClusterUnreachable("connection refused", cluster="c"),
            [{"type": "MODIFIED", "object": with_rv(ready, "4")}],
        ],
    )
    sender = ListSender()
    with waker_for(client, registry, sender, resync_interval=3600) as waker:
        stats = waker.stats[("c", "Deployment")]
        # The wake is sent inside on_object and counted after it returns: wait for both.
        eventually(lambda: len(sender.sent) == 1 and stats.wakes == 1, timeout=10)
        assert (stats.lists, stats.relists, stats.failures, stats.wakes) == (2, 1, 1, 1)
    # Watched from the first list, relisted after 410, then resumed from the last event's version.
    assert client.watched_from[:4] == ["1", "2", "3", "3"]
    [message] = sender.sent
    assert (message.name, message.run_id, message.ticket, message.countdown) == (
        "failover.wait_ready",
        "run-1",
        4,
        0,
    )


def test_the_resync_wakes_a_run_registered_after_its_object_was_seen_ready(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    waits, sender = RedisWaits(fake_redis, prefix="w:"), ListSender()
    client = ScriptedClient(lists=[([with_rv(deployment("web", ready_replicas=2), "1")], "1")], watches=[])
    with waker_for(client, waits, sender, resync_interval=0.05) as waker:
        eventually(lambda: waker.stats[("c", "Deployment")].lists == 1, timeout=10)
        assert sender.sent == []  # nobody waited when the object was seen
        registration = Registration(
            step=Step.WAIT_READY, ticket=9, role=Role.ACTIVE, cluster="c", targets=(WEB,)
        )
        waits.register("run-2", [WEB], registration, ttl=60)
        eventually(lambda: len(sender.sent) == 1, timeout=10)
    assert (sender.sent[0].run_id, sender.sent[0].ticket) == ("run-2", 9)
