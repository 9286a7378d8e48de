"""The Celery application: configuration only, built from :class:`workers.settings.Settings`.

Nothing is built at import: :mod:`workers.tasks` builds the app that registers the tasks (the one
``celery -A workers.tasks`` runs), and a producer's sender builds a client on its first message.

JSON only (no pickle: a message is a run id and a ticket), late acknowledgement with rejection on a
lost worker (every step is idempotent, so redelivery is safe), prefetch ``prefetch_multiplier`` per
pool slot (2: the next message is at hand when a step ends; no step holds its slot for long, since a
wait is re-sent with a countdown rather than polled in place, and a message reserved behind a step
that hangs is sent again by the overdue sweep when another worker has a free slot), task events on
(Flower shows every step as ``failover.<step>``), no result backend (nobody ever waits on a task's
result), and a broker ``visibility_timeout`` that the settings check is far above the longest
countdown.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from workers import broker
from workers.messages import REDRIVE_TASK
from workers.settings import Settings, get_settings


def celery_config(settings: Settings) -> dict[str, Any]:
    transport: dict[str, Any] = {
        **settings.broker_transport_extra,
        "visibility_timeout": settings.visibility_timeout,
    }
    if settings.broker_prefix:
        transport["global_keyprefix"] = settings.broker_prefix
    return {
        "broker_url": settings.broker,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_default_queue": settings.queue,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # A safety net, not the memory budget (tests/benchmarks/bench_rss.py measures that): Celery
        # replaces a pool process whose peak RSS passed it, after its current task (so no step is cut).
        "worker_max_memory_per_child": settings.max_memory_per_child * 1024 or None,
        "beat_schedule": {
            "redrive-overdue-runs": {"task": REDRIVE_TASK, "schedule": settings.redrive_interval},
        },
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured by ``settings`` (default: the environment's), with no tasks."""
    settings = settings or get_settings()
    broker.install()  # kombu's Redis transport with a repair: a worker survives Redis restarting
    app = Celery("failover", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
