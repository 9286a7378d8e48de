"""The transactional outbox: a step message written by the same Redis script as the commit that
decides it, so that a run is never committed without its next message, nor a message sent for a
commit that lost its compare-and-set.

Celery sends a task by building its message (``app.amqp.create_task_message``: protocol 2 headers,
properties and body) and handing it to kombu, whose Redis transport serialises it and LPUSHes it onto
the queue's list (``{global_keyprefix}{queue}``; the routing Celery uses for a named queue is kombu's
anonymous exchange, so the routing key *is* the list, and no exchange binding is read). A worker then
BRPOPs it from there. This module builds the very same stored message ahead of the commit
(:class:`workers.messages.Outgoing`), and :meth:`workers.store.RunStore.commit` pushes it in its
script when, and only when, the compare-and-set succeeds: one Redis round trip instead of two, and
none of kombu's producer machinery per message (0.48 ms of CPU per ``send_task`` against 0.06 ms
here; ``send_task`` was a tenth of what a pool process spent). ``tests/integration/test_outbox.py``
checks, field by field, that the message is the one ``send_task`` would have stored, and that a real
worker runs it.

The outbox needs the broker to be the run store's Redis (the default: ``FAILOVER_BROKER_URL`` unset or
equal to ``FAILOVER_REDIS_URL``), since one script writes both. With another broker
:meth:`BrokerOutbox.outgoing` returns None and the engine sends after its commit as before (a crash
between the two then leaves the message unsent, which the overdue sweep re-sends).

Celery's ``task-sent`` event (Flower's "sent" state), when task events are on, is published after
the commit by :meth:`BrokerOutbox.sent`: monitoring only, best effort, as Celery itself does it.
"""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as to_json

from workers.messages import Outgoing, queue_for

if TYPE_CHECKING:
    from celery import Celery

    from workers.settings import Settings

log = structlog.get_logger(__name__)


def same_redis(broker: str, redis_url: str) -> bool:
    """Whether the broker URL names the run store's Redis (one script can then write both)."""
    return broker == redis_url and broker.startswith(("redis://", "rediss://", "unix://"))


class BrokerOutbox:
    """Builds the step messages of the Celery app ``app`` (the one the workers consume with)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.enabled = same_redis(settings.broker, settings.redis_url)
        self._dispatcher: Any = None

    def outgoing(
        self, name: str, run_id: str, ticket: int, *, countdown: float, cluster: str | None
    ) -> Outgoing | None:
        """The message ``CelerySender.send`` would have put on the broker for the same arguments, or
        None when the broker is not the run store's Redis."""
        if not self.enabled:
            return None
        queue = queue_for(self.settings, cluster)
        args = [run_id, ticket]
        task_id = str(uuid.uuid4())
        # As send_task: a message sent from within a task names it as its parent (Flower's tree).
        parent = self.app.current_worker_task
        root_id = parent_id = None
        if parent is not None:
            root_id, parent_id = parent.request.root_id or parent.request.id, parent.request.id
        message = self.app.amqp.create_task_message(
            task_id,
            name,
            args,
            {},
            countdown=countdown or None,
            reply_to=self.app.thread_oid,
            create_sent_event=self.settings.task_events,
            root_id=root_id,
            parent_id=parent_id,
            argsrepr=repr(args),
            kwargsrepr="{}",
            ignore_result=None,  # as send_task passes it (the app ignores results anyway)
        )
        content_type, content_encoding, body = serialize(message.body, serializer="json")
        raw = body.encode(content_encoding) if isinstance(body, str) else body
        stored = {
            "body": base64.b64encode(raw).decode("ascii"),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": message.headers,
            "properties": {
                **message.properties,
                # send_task's options reach kombu as message properties too: the same here.
                "argsrepr": repr(args),
                "kwargsrepr": "{}",
                "delivery_mode": 2,  # persistent, as kombu's Producer sets it
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        sent_event = dict(message.sent_event) if message.sent_event else None
        if sent_event is not None:
            sent_event.update({"queue": queue, "exchange": "", "routing_key": queue})
        return Outgoing(
            key=f"{self.settings.broker_prefix}{queue}",
            payload=to_json(stored),
            name=name,
            run_id=run_id,
            ticket=ticket,
            sent_event=sent_event,
        )

    def sent(self, outgoing: Outgoing) -> None:
        """Publish Celery's ``task-sent`` event for a message a commit pushed (task events on)."""
        if outgoing.sent_event is None:
            return
        try:
            if self._dispatcher is None:
                self._dispatcher = self.app.events.Dispatcher(enabled=False)
            with self.app.producer_or_acquire() as producer:
                self._dispatcher.publish("task-sent", outgoing.sent_event, producer)
        except Exception as error:  # monitoring only: the message itself is in the queue
            log.warning(
                "task_sent_event.failed", task=outgoing.name, run_id=outgoing.run_id, error=str(error)
            )
