"""The Celery tasks: thin wrappers that take ids, hand them to the engine and return nothing.

One task per step, named ``failover.<step>`` so Flower shows what runs, plus ``failover.start`` and
``failover.redrive``. A task never calls ``.get()`` on another task and never sleeps; the engine
re-enqueues with a countdown instead. The engine is built once per worker process, lazily, after the
prefork pool has forked.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import UTC, datetime
from functools import cache
from typing import Any

import celery.apps.worker as celery_worker
import structlog
from celery import Task, bootsteps
from celery.exceptions import Ignore
from celery.signals import celeryd_after_setup, setup_logging, task_postrun, task_prerun

from fsm.plan import Step
from workers import heartbeat, liveness, metrics
from workers.admission import Admission, admission_for
from workers.app import create_app
from workers.container import build_adapters
from workers.engine import Engine
from workers.logging import configure_logging
from workers.messages import (
    CONTROL_TASK,
    PAUSED_TASK,
    REDRIVE_TASK,
    RESUMED_TASK,
    START_TASK,
    CelerySender,
    task_name,
)
from workers.outbox import BrokerOutbox
from workers.settings import get_settings
from workers.store import RunStore, queue_lengths
from workers.wait_store import RedisWaits

__all__ = ["CelerySender", "app", "control", "get_engine", "paused", "redrive", "resumed", "start"]

# The app that registers the tasks: the one `celery -A workers.tasks worker|beat|flower` runs.
app = create_app()


class _RequireRunKey(bootsteps.Step):
    """A worker without the run key refuses to start: it could not tell its runs from forged ones.
    (A worker step, not an import-time check: Flower imports this module and needs no key.)"""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        get_settings().run_signer()


app.steps["worker"].add(_RequireRunKey)


def build_engine(worker_id: str | None = None) -> Engine:
    settings = get_settings()
    store = RunStore.from_settings(settings)
    sender = CelerySender(app, settings)
    waits = RedisWaits(store.client, prefix=store.prefix) if settings.wake_waits else None
    outbox = BrokerOutbox(app, settings) if settings.outbox else None
    return Engine(
        store, build_adapters(settings), sender, settings, worker_id=worker_id, waits=waits, outbox=outbox
    )


@cache
def get_engine() -> Engine:
    """The engine of this (pool) process; its steps are claimed by the worker it belongs to."""
    return build_engine(heartbeat.worker_id())


@app.task(name=START_TASK)
def start(run_id: str, ticket: int = 0) -> None:
    get_engine().start(run_id)


@app.task(name=CONTROL_TASK)
def control(run_id: str, ticket: int = 0) -> None:
    """An operator asked for a control of the run: applied now if no step of it is running."""
    get_engine().control(run_id)


@app.task(name=PAUSED_TASK, bind=True)
def paused(self: Task, run_id: str, control: int = 0) -> str:  # type: ignore[type-arg]
    """A pause was applied (sent by the engine): while the run is still paused, this task's state in
    Flower is ``PAUSED`` (a custom task event; the task is then acknowledged without a result, so no
    later event overrides the state). If it was resumed meanwhile, it ends SUCCESS saying so."""
    run = get_engine().store.load(run_id)
    if run is None or not run.paused:
        return f"run {run_id} is no longer paused"
    record = next((c for c in run.controls if c.id == control), None)
    who = f" by {record.who} ({record.why})" if record is not None else ""
    self.send_event(
        "task-paused",
        result=f"PAUSED: run {run_id} ({run.failover}) holds before {run.step_key}{who}; "
        f"resume with `failoverctl run resume {run_id} --reason ...`",
    )
    raise Ignore()


@app.task(name=RESUMED_TASK)
def resumed(run_id: str, control: int = 0) -> str:
    """A paused run was resumed (sent by the engine): shown in Flower as a task naming the run."""
    run = get_engine().store.load(run_id)
    record = next((c for c in run.controls if c.id == control), None) if run is not None else None
    who = f" by {record.who} ({record.why})" if record is not None else ""
    return f"RESUMED: run {run_id}{who}"


@app.task(name=REDRIVE_TASK)
def redrive() -> None:
    """Beat's sweep (the backstop of the workers' own): overdue runs, then runs Redis lost."""
    engine = get_engine()
    engine.redrive()
    engine.recover()


def _register(step: Step) -> None:
    def run(run_id: str, ticket: int) -> None:
        get_engine().run_step(step, run_id, ticket)

    run.__name__ = step.value
    run.__doc__ = f"Run step {step.value} of a failover run."
    app.task(name=task_name(step))(run)


for _step in Step:
    _register(_step)


def _queue_depth() -> dict[str, int]:
    settings = get_settings()
    return queue_lengths(settings.broker, [settings.queue], prefix=settings.broker_prefix)


@cache
def _site_admission() -> Admission:
    """The admission queue as the metrics endpoint (the worker's main process) reads it."""
    settings = get_settings()
    return admission_for(RunStore.from_settings(settings), settings)


def _admission_queued() -> dict[str, int]:
    return _site_admission().queued()


# Connected at import: Celery decides at start-up which signals it sends (heartbeat_sent among them).
liveness.connect_celery_signals()
# Heartbeats and the recovery sweep, in the worker's main process (README "Reliability").
heartbeat.connect_celery_signals(get_settings, build_engine)
if get_settings().metrics_port:
    metrics.connect_celery_signals(
        get_settings().metrics_port,
        queue_depth=_queue_depth,
        admission_queued=_admission_queued if get_settings().admission else None,
    )


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """Replaces Celery's own logging set-up: one format for our events and Celery's."""
    settings = get_settings()
    configure_logging(json=settings.log_json, level=settings.log_level)


def _say_as_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's ``safe_say`` (shutdown notices, written from signal handlers) as one JSON line, written
    the way Celery writes it (one ``os.write``, no lock, no logging machinery)."""
    line = {"event": " ".join(str(msg).split()), "level": "info", "logger": "celery.apps.worker"}
    line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(f.fileno(), (json.dumps(line) + "\n").encode())


@celeryd_after_setup.connect
def _banner_as_a_log_line(sender: str | None = None, instance: Any = None, **_: Any) -> None:
    """With JSON logs, Celery's text banner becomes one ``worker.starting`` event (it is printed
    right after this signal unless the worker is quiet)."""
    settings = get_settings()
    if not settings.log_json or instance is None:
        return
    instance.quiet = True
    queues = sorted(getattr(getattr(instance.app, "amqp", None), "queues", {}) or [])
    structlog.get_logger(__name__).info(
        "worker.starting", hostname=sender, queues=queues, concurrency=getattr(instance, "concurrency", None)
    )


# JSON from the very first line: Celery reads the settings' logging only once the worker is set up,
# after its own warnings (e.g. running as root) and before its banner and shutdown notices.
if get_settings().log_json:
    configure_logging(json=True, level=get_settings().log_level)
    celery_worker.safe_say = _say_as_json  # type: ignore[attr-defined]


@task_prerun.connect
def _bind_log_context(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    run_id = args[0] if args else None
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None), run_id=run_id)


@task_postrun.connect
def _unbind_log_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
