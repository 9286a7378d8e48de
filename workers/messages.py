"""The messages of a run and the sender that puts them on the broker.

A message is ``(run_id, ticket)`` sent to a task by name: ``failover.start``, ``failover.redrive`` or
``failover.<step>``. Producers send only the start message; the engine sends the others. Both use
:class:`CelerySender`, which is why it lives here and not next to the tasks: importing this module
(or :mod:`workers.api`) must not import Celery, build its app or read the settings. A producer's
sender builds a Celery *client* from the settings on its first send; the worker's sender is given
the app that registers the tasks (:mod:`workers.tasks`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fsm.plan import Step
from workers.settings import Settings

START_TASK = "failover.start"
REDRIVE_TASK = "failover.redrive"
CONTROL_TASK = "failover.control"  # an operator's control was requested: apply it at a step boundary
# A pause was applied: shows the run in Flower as PAUSED (its args name the run and the pause request).
PAUSED_TASK = "failover.paused"
RESUMED_TASK = "failover.resumed"  # ... and a resume as a task of its own, SUCCESS, naming the run


def task_name(step: Step) -> str:
    return f"failover.{step.value}"


def queue_for(settings: Settings, cluster: str | None) -> str:
    """The queue a message for a run at ``cluster`` goes to (one per cluster when so configured)."""
    if settings.per_cluster_queues and cluster:
        return f"{settings.queue}.{cluster}"
    return settings.queue


@dataclass(frozen=True)
class Outgoing:
    """A step message built ahead of the commit that pushes it (:mod:`workers.outbox`): the message
    as kombu's Redis transport stores it (``payload``) and the list it goes on (``key``)."""

    key: str
    payload: str
    name: str
    run_id: str
    ticket: int
    sent_event: dict[str, Any] | None = field(default=None, compare=False)


class Sender(Protocol):
    """Sends one message ``(run_id, ticket)`` to the task ``name`` after ``countdown`` seconds."""

    def send(self, name: str, run_id: str, ticket: int, *, countdown: float, cluster: str | None) -> None: ...


class TaskClient(Protocol):
    """What the sender needs of a Celery app: ``send_task`` (and ``close`` for one it built)."""

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = ...,
        *,
        countdown: float | None = ...,
        queue: str | None = ...,
        argsrepr: str | None = ...,
        kwargsrepr: str | None = ...,
    ) -> object: ...

    def close(self) -> None: ...


class CelerySender:
    """Sends step messages by task name, to a queue per cluster when so configured.

    ``client`` is the Celery app to send through; without one (:meth:`from_settings`) a client is
    built from the settings on the first send and closed by :meth:`close`.
    """

    def __init__(self, client: TaskClient | None, settings: Settings) -> None:
        self.settings = settings
        self._client = client
        self._owned: TaskClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> CelerySender:
        """A sender that builds its own Celery client when it first sends (producers use this)."""
        return cls(None, settings)

    def client(self) -> TaskClient:
        if self._client is not None:
            return self._client
        with self._lock:
            if self._owned is None:
                # Celery is loaded here, on the first message, never at import (see the module doc).
                from workers.app import create_app

                self._owned = create_app(self.settings)
            return self._owned

    def send(self, name: str, run_id: str, ticket: int, *, countdown: float, cluster: str | None) -> None:
        queue = queue_for(self.settings, cluster)
        args = [run_id, ticket]
        # The representations Flower shows, given rather than computed by Celery's saferepr (a tenth
        # of what a send costs, for two plain values).
        self.client().send_task(
            name, args=args, countdown=countdown or None, queue=queue, argsrepr=repr(args), kwargsrepr="{}"
        )

    def close(self) -> None:
        """Close the client this sender built (a client it was given belongs to its owner)."""
        with self._lock:
            owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()
