"""Waits woken by events (workers.waits): what a waiting step registers, when it is forgotten, and the
wake decision, on fakes of our own ports (the registry on fakeredis, messages delivered by hand).
tests/autofailover/test_waits_woken.py runs the real waker, worker and sandbox clusters."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from fsm.plan import CATALOGUE, Step
from tests.unit.test_engine import Harness, ListSender, harness, submit

__all__ = ["harness"]  # the engine fixture, shared
from workers.engine import Engine
from workers.ports import Role
from workers.wait_store import RedisWaits
from workers.waits import Registration, WaitTarget, Wakes, ready, wait_targets


def deployment(
    name: str, *, ready_replicas: int, replicas: int = 2, namespace: str = "shop"
) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 3},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 3,
            "replicas": ready_replicas,
            "readyReplicas": ready_replicas,
            "availableReplicas": ready_replicas,
            "updatedReplicas": ready_replicas,
        },
    }


@pytest.fixture
def waits(fake_redis: fakeredis.FakeRedis) -> RedisWaits:
    return RedisWaits(fake_redis, prefix="t:")


@pytest.fixture
def woken_harness(harness: Harness, waits: RedisWaits) -> tuple[Harness, RedisWaits]:
    old = harness.engine
    harness.engine = Engine(
        old.store, old.adapters, old.sender, old.settings, clock=old.clock, jitter=old.jitter, waits=waits
    )
    return harness, waits


def deliver_until_waiting(h: Harness, step: Step) -> None:
    """Deliver messages until the run has re-sent ``step`` after a check that found it not done."""
    for _ in range(200):
        message = h.sender.sent.pop(0)
        h.deliver(message)
        run = h.store.load("run-1")
        assert run is not None
        record = run.steps.get(step.value)
        if run.dispatch and run.dispatch.step is step and record is not None and record.checks:
            return
    raise AssertionError(f"{step.value} never waited")


def test_a_waiting_step_registers_its_objects_with_the_ticket_it_was_sent_again(
    woken_harness: tuple[Harness, RedisWaits],
) -> None:
    h, waits = woken_harness
    submit(h)
    deliver_until_waiting(h, Step.WAIT_SCALED_DOWN)
    run = h.store.load("run-1")
    assert run is not None and run.dispatch is not None
    refs = run.resources.select(CATALOGUE[Step.WAIT_SCALED_DOWN].objects)
    expected = sorted(f"{r.namespace}/{r.name}" for r in refs if r.kind == "Deployment")
    targets = waits.registered("site-a", "Deployment")
    assert expected and [t.object_key for t in targets] == expected
    [target, *_] = targets
    registration = waits.registrations(target)["run-1"]
    assert registration == Registration(
        step=Step.WAIT_SCALED_DOWN,
        ticket=run.dispatch.ticket,
        role=Role.PASSIVE,
        cluster="site-a",
        targets=tuple(WaitTarget("site-a", r.kind, r.namespace, r.name) for r in refs),
    )


def test_the_registration_is_forgotten_when_the_wait_ends_and_nothing_is_left_at_the_end(
    woken_harness: tuple[Harness, RedisWaits], fake_redis: fakeredis.FakeRedis
) -> None:
    h, _waits = woken_harness
    submit(h)
    deliver_until_waiting(h, Step.WAIT_SCALED_DOWN)
    assert fake_redis.exists("t:waitrun:run-1")
    h.pump()
    run = h.store.load("run-1")
    assert run is not None and run.status.value == "SUCCESS", run and run.message
    assert not fake_redis.exists("t:waitrun:run-1")
    assert all(fake_redis.hlen(key) == 0 for key in fake_redis.scan_iter("t:wait:*"))


def test_a_wake_sends_the_expected_ticket_once_and_the_step_counts_as_woken(
    woken_harness: tuple[Harness, RedisWaits],
) -> None:
    h, waits = woken_harness
    submit(h)
    deliver_until_waiting(h, Step.WAIT_SCALED_DOWN)
    run = h.store.load("run-1")
    assert run is not None and run.dispatch is not None
    polled = h.sender.sent.pop()  # the countdown's copy, delivered later
    assert polled.countdown > 0
    wakes = Wakes(waits, h.sender)
    [target, *_] = waits.registered("site-a", "Deployment")
    down = deployment(target.name, ready_replicas=0, namespace=target.namespace)
    assert wakes.on_object("site-a", "Deployment", down, at=h.clock.now) == ["run-1"]
    assert wakes.on_object("site-a", "Deployment", down, at=h.clock.now) == []  # claimed once per ticket
    [woken] = h.sender.sent
    assert (woken.run_id, woken.ticket, woken.countdown) == ("run-1", run.dispatch.ticket, 0.0)
    h.deliver(h.sender.sent.pop(0))
    assert waits.woken("run-1") == {Step.WAIT_SCALED_DOWN.value: 1}
    # The countdown's copy of the same ticket comes later and finds the run moved on: nothing happens.
    before = h.store.load("run-1")
    assert before is not None
    assert h.deliver(polled) is None
    after = h.store.load("run-1")
    assert after is not None and after.version == before.version


def test_an_object_not_yet_in_the_role_wakes_nobody(waits: RedisWaits) -> None:
    sender = ListSender()
    target = WaitTarget("site-a", "Deployment", "shop", "web")
    registration = Registration(step=Step.WAIT_READY, ticket=7, role=Role.ACTIVE, cluster="site-b")
    waits.register("run-9", [target], registration, ttl=60)
    wakes = Wakes(waits, sender)
    assert wakes.on_object("site-a", "Deployment", deployment("web", ready_replicas=1), at=1.0) == []
    assert wakes.on_object("site-a", "Deployment", deployment("other", ready_replicas=2), at=1.0) == []
    assert wakes.on_object("site-b", "Deployment", deployment("web", ready_replicas=2), at=1.0) == []
    assert sender.sent == []
    assert wakes.on_object("site-a", "Deployment", deployment("web", ready_replicas=2), at=1.0) == ["run-9"]
    [sent] = sender.sent
    assert (sent.name, sent.ticket, sent.cluster) == ("failover.wait_ready", 7, "site-b")


def test_registering_again_replaces_the_objects_and_clear_forgets_them(waits: RedisWaits) -> None:
    a, b = WaitTarget("c1", "Deployment", "ns", "a"), WaitTarget("c1", "Deployment", "ns", "b")
    first = Registration(step=Step.WAIT_READY, ticket=1, role=Role.ACTIVE, cluster="c1")
    waits.register("r", [a, b], first, ttl=30)
    waits.register(
        "r", [b], Registration(step=Step.WAIT_READY, ticket=2, role=Role.ACTIVE, cluster="c1"), ttl=30
    )
    assert waits.registrations(a) == {}
    assert waits.registrations(b)["r"].ticket == 2
    assert [t.object_key for t in waits.registered("c1", "Deployment")] == ["ns/b"]
    waits.clear("r")
    assert waits.registrations(b) == {}
    assert waits.registered("c1", "Deployment") == []  # the index is pruned of what nobody waits for


def test_only_waits_on_objects_register_and_readiness_is_the_steps_own_judgement(harness: Harness) -> None:
    submit(harness)
    harness.deliver(harness.sender.sent.pop(0))  # start: the run is at validate
    run = harness.store.load("run-1")
    assert run is not None and run.dispatch is not None
    assert wait_targets(run, run.dispatch.step) is None  # validate waits for nothing
    assert wait_targets(run, Step.WAIT_VOLUMES_RELEASED) is None  # a DynamoDB wait: not watched
    passive = Registration(step=Step.WAIT_SCALED_DOWN, ticket=1, role=Role.PASSIVE, cluster="c")
    assert ready("Deployment", deployment("web", ready_replicas=0), passive)
    assert not ready("Deployment", deployment("web", ready_replicas=1), passive)
    assert not ready("NoSuchKind", {}, passive)


def test_a_wait_on_several_objects_is_woken_only_when_all_of_them_hold(waits: RedisWaits) -> None:
    """With the waker's cache, the object already there does not wake the run over and over."""
    sender = ListSender()
    web, api = WaitTarget("c", "Deployment", "shop", "web"), WaitTarget("c", "Deployment", "shop", "api")
    registration = Registration(
        step=Step.WAIT_READY, ticket=3, role=Role.ACTIVE, cluster="c", targets=(web, api)
    )
    waits.register("run-2", [web, api], registration, ttl=60)
    cache = {web: deployment("web", ready_replicas=2), api: deployment("api", ready_replicas=0)}
    wakes = Wakes(waits, sender)
    assert wakes.on_object("c", "Deployment", cache[web], at=1.0, lookup=cache.get) == []
    cache[api] = deployment("api", ready_replicas=2)
    assert wakes.on_object("c", "Deployment", cache[api], at=2.0, lookup=cache.get) == ["run-2"]
    assert [m.ticket for m in sender.sent] == [3]
