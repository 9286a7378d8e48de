"""A worker's heartbeat says it is free only after a whole interval with a free slot and no message
received: sampled between two messages of a long queue, it is not idle (issue 15's false redrives)."""

from __future__ import annotations

from types import SimpleNamespace

from celery.signals import task_received

from workers.heartbeat import CeleryStatus


def _status() -> CeleryStatus:
    consumer = SimpleNamespace(controller=SimpleNamespace(concurrency=1))
    status = CeleryStatus(consumer, "failover")
    return status


def test_a_free_slot_counts_from_the_last_message_received() -> None:
    status = _status()
    try:
        assert status.free_for(busy=1, now=100.0) == 0.0
        assert status.free_for(busy=0, now=101.0) == 0.0  # just freed
        assert status.free_for(busy=0, now=103.5) == 2.5
        task_received.send(sender=None, request=None)  # a message came in: the queue is moving
        received = status._received_at
        assert status.free_for(busy=0, now=received + 0.4) == 0.4
    finally:
        task_received.disconnect(status.received)


def test_sampling_a_free_slot_between_two_messages_never_adds_up_to_idle() -> None:
    status = _status()
    try:
        for tick in range(5):  # each heartbeat samples a free slot, but a message arrived just before
            task_received.send(sender=None, request=None)
            assert status.free_for(busy=0, now=status._received_at + 0.01) < 0.1, tick
    finally:
        task_received.disconnect(status.received)
