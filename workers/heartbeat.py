"""Worker heartbeats and the recovery sweep: two daemon threads in each Celery worker's main process.

- The **heartbeat** thread writes ``{prefix}worker:{id}`` every ``heartbeat_interval`` with a TTL of
  ``heartbeat_timeout``, saying which queues the worker consumes, how many of its slots are busy and
  for how long it has had a free slot. A SIGKILLed worker (main process and pool) stops writing; its
  key expires, and the steps it claimed are sent again by the next sweep.
- The **sweeper** thread, every ``heartbeat_interval``, takes the site's sweep turn if nobody took it
  this interval (one ``SET NX PX``) and runs :meth:`Engine.redrive`; every ``recovery_interval``
  (and at once when Redis is found without its sentinel key: flushed, or replaced by an empty one)
  it runs :meth:`Engine.recover`, which rebuilds from the journal the runs of the locks this site
  holds.

The worker id is made in the main process on ``worker_init`` (before the pool forks) and handed to
the pool processes in ``FAILOVER_WORKER_ID``: their engines record every step they start as claimed by
it (:meth:`Engine.run_step`). A pool process that dies alone is Celery's business (the main process
rejects its message back to the queue, ``task_reject_on_worker_lost``); a hung step is caught by
``start_to_close``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog

from workers.engine import Engine
from workers.recovery import WorkerInfo
from workers.settings import Settings
from workers.store import RunStore

log = structlog.get_logger(__name__)

WORKER_ID_ENV = "FAILOVER_WORKER_ID"


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def worker_id() -> str | None:
    """This process's worker id (set by the worker's main process before its pool forks), if any."""
    return os.environ.get(WORKER_ID_ENV) or None


class Recovery:
    """The heartbeat and sweeper threads of one worker (see the module docstring)."""

    def __init__(
        self,
        store: RunStore,
        settings: Settings,
        worker: str,
        status: Callable[[], WorkerInfo],
        engine: Callable[[], Engine],
        *,
        sweep: bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self.worker = worker
        self.status = status
        self._make_engine = engine
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._beat_loop, name="failover-heartbeat", daemon=True)]
        if sweep:
            self._threads.append(
                threading.Thread(target=self._sweep_loop, name="failover-sweep", daemon=True)
            )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, *, retire: bool = True) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5.0)
        if retire:
            try:
                self.store.retire(self.worker)
            except Exception as error:  # shutting down: say so, never raise
                log.warning("worker.retire_failed", worker=self.worker, error=str(error))

    def beat(self) -> None:
        self.store.heartbeat(self.worker, self.status(), ttl=self.settings.heartbeat_timeout)

    def sweep(self) -> None:
        """One round: recover lost runs when due (or when Redis lost its data), then the overdue sweep."""
        interval = self.settings.heartbeat_interval
        if self._engine is None:
            self._engine = self._make_engine()
        engine = self._engine
        if self.store.lost_data():
            log.warning("redis.found_empty", worker=self.worker, action="rebuilding the runs of held locks")
            self._recover(engine)
        elif self.store.take_turn("recover", seconds=self.settings.recovery_interval * 0.9):
            self._recover(engine)
        if self.store.take_turn("sweep", seconds=interval * 0.9):
            engine.redrive()

    def _recover(self, engine: Engine) -> None:
        rebuilt = engine.recover()
        if rebuilt:
            log.warning("runs.recovered", worker=self.worker, runs=rebuilt)

    def _beat_loop(self) -> None:
        self._loop(self.beat, "heartbeat")

    def _sweep_loop(self) -> None:
        self._loop(self.sweep, "sweep")

    def _loop(self, tick: Callable[[], None], name: str) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            started = time.monotonic()
            try:
                tick()
            except Exception as error:  # Redis or DynamoDB down: the next tick tries again
                log.warning(
                    "recovery.tick_failed",
                    tick=name,
                    worker=self.worker,
                    error=f"{type(error).__name__}: {error}",
                )
            if self._stop.wait(max(0.0, interval - (time.monotonic() - started))):
                return


class CeleryStatus:
    """How busy a Celery worker is, read from its main process's request bookkeeping.

    "Free" means a free slot *and* no message received since: a heartbeat that samples a slot free
    between two messages of a long queue must not call the worker idle (the sweep would then take
    every queued message for lost). Every message the worker's consumer receives (``task_received``,
    in the main process, countdown messages included) restarts the free time."""

    def __init__(self, consumer: Any, default_queue: str) -> None:
        from celery.signals import task_received

        self.consumer = consumer
        self.default_queue = default_queue
        self.slots = max(1, int(getattr(consumer.controller, "concurrency", 1) or 1))
        self._free_since: float | None = time.monotonic()
        self._received_at = 0.0
        task_received.connect(self.received, weak=False)

    def received(self, **_: Any) -> None:
        self._received_at = time.monotonic()

    def queues(self) -> tuple[str, ...]:
        try:
            names = tuple(sorted(q.name for q in self.consumer.task_consumer.queues))
        except Exception:  # the consumer is reconnecting
            names = ()
        return names or tuple(sorted(self.consumer.app.amqp.queues.consume_from)) or (self.default_queue,)

    def __call__(self) -> WorkerInfo:
        from celery.worker import state

        busy = len(set(state.reserved_requests) | set(state.active_requests))
        return WorkerInfo(queues=self.queues(), slots=self.slots, busy=busy, free_for=self.free_for(busy))

    def free_for(self, busy: int, now: float | None = None) -> float:
        """Seconds with a free slot and no message received (0 while busy)."""
        now = time.monotonic() if now is None else now
        if busy >= self.slots:
            self._free_since = None
            return 0.0
        if self._free_since is None:
            self._free_since = now
        return round(max(0.0, now - max(self._free_since, self._received_at)), 3)


def connect_celery_signals(settings: Callable[[], Settings], engine: Callable[[], Engine]) -> None:
    """Give the worker an id before its pool forks, start the threads when it is ready, retire it on
    a clean shutdown. ``engine`` builds the sweeper's engine (in the main process, not the cached
    engine of the pool processes)."""
    from celery.signals import worker_init, worker_ready, worker_shutdown

    running: list[Recovery] = []

    def _identify(**_: Any) -> None:
        os.environ[WORKER_ID_ENV] = new_worker_id()

    def _start(sender: Any = None, **_: Any) -> None:
        current = settings()
        if not current.recovery_thread or sender is None:
            return
        ident = worker_id() or new_worker_id()
        store = RunStore.from_settings(current)
        recovery = Recovery(store, current, ident, CeleryStatus(sender, current.queue), engine)
        try:
            recovery.beat()  # alive from the first moment, not one interval later
        except Exception as error:
            log.warning("heartbeat.failed", worker=ident, error=str(error))
        recovery.start()
        running.append(recovery)
        log.info("worker.recovery_started", worker=ident, interval=current.heartbeat_interval)

    def _stop(**_: Any) -> None:
        while running:
            running.pop().stop()

    worker_init.connect(_identify, weak=False)
    worker_ready.connect(_start, weak=False)
    worker_shutdown.connect(_stop, weak=False)
