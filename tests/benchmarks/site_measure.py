"""What :mod:`tests.benchmarks.bench_site` watches while the runs are in flight.

- :class:`RssSampler`: each worker's peak resident memory, its main process and its pool child apart
  (the issue's 150 MB is per process: a worker is a Celery main process plus a prefork child);
- :class:`FairnessProbe`: one operator Failover submitted while the site's runs are in flight, timed
  from submission to start (``started_at``, set when the run is admitted and started) and to finish;
- :func:`wait_all`: every run once all are finished, polling the in-flight index first so that this
  process stays off the cores the workers need.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from fsm.models import Failover, FailoverGroup
from fsm.run import Run
from sandbox.celery_worker import WorkerProcess
from sandbox.kube.process import cpu_seconds_of, rss_bytes_of
from workers.api import Orchestrator
from workers.settings import Settings


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (a Celery worker's prefork pool)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class RssSampler(threading.Thread):
    """The peak RSS of each worker's main process and of its largest pool child, every second; and
    the CPU seconds each of those processes used (the latest reading per process, so that a pool child
    replaced meanwhile still counts)."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        super().__init__(daemon=True)
        self.workers = workers
        self.main = [0] * len(workers)
        self.child = [0] * len(workers)
        self.cpu_main: dict[int, float] = {}
        self.cpu_child: dict[int, float] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        for i, worker in enumerate(self.workers):
            pid = worker.process.pid
            children = children_of(pid)
            self.main[i] = max(self.main[i], rss_bytes_of(pid))
            self.child[i] = max([self.child[i], *(rss_bytes_of(c) for c in children)])
            self.cpu_main[pid] = max(self.cpu_main.get(pid, 0.0), cpu_seconds_of(pid))
            for child in children:
                self.cpu_child[child] = max(self.cpu_child.get(child, 0.0), cpu_seconds_of(child))

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the workers' main processes and by their pool children."""
        self.sample()
        return sum(self.cpu_main.values()), sum(self.cpu_child.values())

    def run(self) -> None:
        self.sample()
        while not self.stop.wait(1.0):
            self.sample()


def wait_all(
    store: Any, client: redis.Redis, prefix: str, run_ids: list[str], timeout: float
) -> dict[str, Run]:
    """Every run once all are finished, or at the timeout.

    The in-flight index is polled first (one ZCARD a second); once it is empty every run is read and,
    should any not be finished (a run waiting for admission need not be in that index), read again
    every 5 s. Polling the index, not the runs, keeps this process off the cores the workers need."""
    deadline = time.monotonic() + timeout
    while client.zcard(f"{prefix}inflight") and time.monotonic() < deadline:
        time.sleep(1.0)
    while True:
        runs: dict[str, Run] = store.load_many(run_ids)
        if all(run.terminal for run in runs.values()) or time.monotonic() >= deadline:
            return runs
        time.sleep(5.0)


class FairnessProbe(threading.Thread):
    """One operator Failover for one more group, submitted once ``fraction`` of the site's runs have
    started (judged on up to 40 of them, evenly spread over the submission order), then timed.

    ``on_fire`` is called just before (the benchmark starts its profile then: the busiest phase, every
    run in flight). It uses an Orchestrator of its own, so that nothing is shared with the benchmark's thread.
    Figures (``figures()``): seconds from submission (the run's ``created_at``) to its ``started_at``
    and to its finish, its status, and how far the site's runs were when it was submitted."""

    def __init__(
        self,
        settings: Settings,
        pair: tuple[Failover, FailoverGroup],
        run_ids: list[str],
        *,
        fraction: float,
        timeout: float,
        on_fire: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.pair = pair
        step = max(1, len(run_ids) // 40)
        self.sample = run_ids[::step][:40]
        self.fraction = fraction
        self.timeout = timeout
        self.on_fire = on_fire
        self.result: dict[str, Any] = {}

    def _progress(self, handle: Orchestrator) -> tuple[float, float]:
        runs = list(handle.store.load_many(self.sample).values())
        if not runs:
            return 0.0, 0.0
        started = sum(1 for r in runs if r.started_at is not None) / len(runs)
        finished = sum(1 for r in runs if r.terminal) / len(runs)
        return started, finished

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        with Orchestrator(self.settings) as handle:
            started, finished = self._progress(handle)
            while started < self.fraction and finished < 1.0 and time.monotonic() < deadline:
                time.sleep(0.5)
                started, finished = self._progress(handle)
            if self.on_fire is not None:
                self.on_fire()
            failover, group = self.pair
            run_id = handle.submit(failover, group, failover_cluster="site-a", source="site-a").run.run_id
            run = handle.run(run_id)
            while run is not None and run.started_at is None and time.monotonic() < deadline:
                time.sleep(0.1)
                run = handle.run(run_id)
            while run is not None and not run.terminal and time.monotonic() < deadline:
                time.sleep(0.5)
                run = handle.run(run_id)
        self.result = {
            "run": run,
            "site_started": started,
            "site_finished": finished,
        }

    def figures(self) -> dict[str, Any]:
        run: Run | None = self.result.get("run")
        if run is None:
            return {"status": "not submitted", "start_s": None, "finish_s": None}
        return {
            "run_id": run.run_id,
            "status": run.status.value,
            "start_s": None if run.started_at is None else run.started_at - run.created_at,
            "finish_s": None if run.finished_at is None else run.finished_at - run.created_at,
            "site_started_fraction": self.result["site_started"],
            "site_finished_fraction": self.result["site_finished"],
        }
