"""Prometheus metrics, derived from run values after each committed decision, and their HTTP endpoint.

:class:`MetricsObserver` is a :class:`workers.container.RunObserver`: the engine hands it the run value
it just committed and it works out, from that value alone, what the decision changed. It must not
import ``redis`` or any adapter (the queue depth and the runs queued for admission are read through
callbacks, :class:`ScrapedGauge`), never block, and keep no more than a bounded map of run id -> last
version seen.

Why from the value alone: consecutive decisions of one run are taken by different worker processes
(prefork children, other pods), so a per-process memory of "what the run looked like before" is
usually missing or stale. Every decision stamps what it finishes with its own time ``now``, and that
time can be read back from the committed run (the dispatch it scheduled is due at ``now`` with a
zero countdown, or the run finished at ``now``), so "records whose ``finished_at`` is that time" are
exactly the ones this decision finished: each step is counted once, by whichever process finished it.

Multiprocess (Celery prefork): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty writable directory in the
worker's environment *before it starts* (``prometheus_client`` chooses its value store when first
imported). Each process then writes its samples to files there; :func:`start_metrics_server`, called
once in the parent (see :func:`connect_celery_signals`), serves the sum over all of them. Clear the
directory when the worker starts (:func:`clear_multiprocess_dir`): files of a previous container's
processes would otherwise be counted again. Without the variable everything stays in-process.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fsm.audit import ControlRecord
from fsm.forecast import Forecast
from fsm.run import Run, StepRecord

log = structlog.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_PORT = 9808

# Seconds. Steps range from a DynamoDB write (tens of ms) to a wait for volumes (minutes).
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RUN_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
DOWNTIME_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Seconds from the watch event that woke a wait to the step's attempt (target: p50 0.1 s, p95 1 s).
WAKE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ScrapeReader = Callable[[], Mapping[str, int]]  # label value -> number, read at each scrape


class Metrics:
    """Every metric of the orchestrator, registered in one registry (a fresh one in tests)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.runs_started = Counter(
            "failover_runs_started_total", "Runs that started, by mode.", ["mode"], registry=registry
        )
        self.runs = Counter(
            "failover_runs_total",
            "Runs that finished, by mode and outcome (success, failed or cancelled).",
            ["mode", "outcome"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "failover_run_duration_seconds",
            "Wall time of finished runs, from start to the final decision.",
            ["mode", "outcome"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.steps = Counter(
            "failover_steps_total",
            "Steps that finished, by outcome (done, failed, skipped or cancelled); undo actions as "
            "undo:<step>.",
            ["mode", "step", "outcome"],
            registry=registry,
        )
        self.step_duration = Histogram(
            "failover_step_duration_seconds",
            "Wall time of a finished step, first attempt to outcome (polls and retries included).",
            ["mode", "step"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.downtime = Histogram(
            "failover_downtime_seconds",
            "Measured downtime of successful runs: source network off to target network on.",
            ["mode"],
            buckets=DOWNTIME_BUCKETS,
            registry=registry,
        )
        self.wakes = Counter(
            "failover_wait_wakes_total",
            "Attempts of wait steps started by a watch event (workers.waits) rather than by their countdown.",
            ["step"],
            registry=registry,
        )
        self.wake_latency = Histogram(
            "failover_wait_wake_latency_seconds",
            "Reaction latency of a woken wait: from the watch event to the step's next attempt.",
            ["step"],
            buckets=WAKE_BUCKETS,
            registry=registry,
        )
        self.admission_wait = Histogram(
            "failover_admission_wait_seconds",
            "From a run's submission to its admission (workers.admission): how long it was queued.",
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self._health_and_safety(registry)

    def _health_and_safety(self, registry: CollectorRegistry) -> None:
        self.retries = Counter(
            "failover_step_retries_total",
            "Temporary step failures, each retried with backoff until the step's attempt budget or "
            "deadline is spent; counted when the step finishes.",
            ["step"],
            registry=registry,
        )
        self.kube_throttled = Counter(
            "failover_kube_throttled_requests_total",
            "Kubernetes requests that waited for the client-side rate limit of their cluster "
            "(FAILOVER_KUBE_QPS, FAILOVER_KUBE_BURST).",
            ["cluster"],
            registry=registry,
        )
        self.kube_throttle_seconds = Counter(
            "failover_kube_throttle_seconds_total",
            "Seconds Kubernetes requests waited for the client-side rate limit of their cluster.",
            ["cluster"],
            registry=registry,
        )
        self.forged_runs = Counter(
            "failover_forged_runs_total",
            "Run values refused because their MAC did not verify (security.forged_run); nothing was done.",
            registry=registry,
        )
        self.lock_held = Gauge(
            "failover_lock_held",
            "1 while a run holds the group's lock (fencing token taken, run not finished), else 0.",
            ["group"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.heartbeat_age = Gauge(
            "failover_cluster_heartbeat_age_seconds",
            "Seconds since the cluster's last heartbeat for the group, as the health checker last saw it.",
            ["group", "cluster"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.controls = Counter(
            "failover_controls_total",
            "Operator controls of runs in flight decided by the engine (or refused and recorded at once, "
            "for an annotation), by action and outcome (applied or refused).",
            ["action", "outcome"],
            registry=registry,
        )
        self.predicted_rto = Gauge(
            "failover_predicted_rto_seconds",
            "Predicted RTO of a group per mode from its own history (fsm.forecast), by quantile.",
            ["group", "mode", "quantile"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )


@cache
def default_metrics() -> Metrics:
    """The process's metrics in the default registry (created once, on first use).

    In multiprocess mode the directory must exist before the first sample is written; it is created
    here too, so that a worker whose parent did not prepare it still counts instead of failing.
    """
    path = multiprocess_dir()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    return Metrics()


def step_label(key: str) -> str:
    """The ``step`` label of a record key: ``scale_down_workloads``, or ``undo:<step>`` for an undo.

    Undo records are keyed ``undo:<index>:<step>``; the index is dropped to keep the label bounded.
    """
    if key.startswith("undo:"):
        return f"undo:{key.rsplit(':', 1)[-1]}"
    return key


def decided_at(run: Run) -> float | None:
    """The ``now`` of the decision that produced ``run``, read back from the value. Pure.

    A decision that moves on dispatches the next step due at ``now`` with no countdown; one that
    ends the run sets ``finished_at = now``. A re-check or retry (a countdown) finishes no record,
    so the approximate value it yields never matches a record's ``finished_at``.
    """
    if run.dispatch is not None:
        return run.dispatch.due_at - run.dispatch.countdown
    return run.finished_at


def finished_by_last_decision(run: Run) -> list[tuple[str, StepRecord]]:
    """The records that the decision producing ``run`` gave an outcome to. Pure."""
    now = decided_at(run)
    if now is None:
        return []
    return [
        (key, record)
        for key, record in run.steps.items()
        if record.outcome is not None and record.finished_at == now
    ]


class MetricsObserver:
    """Derives the metrics from each committed run value (see the module docstring).

    Memory: the last version seen per run id, for at most ``memory`` runs (oldest forgotten first),
    so that the same committed value observed twice is counted once.
    """

    def __init__(self, metrics: Metrics | None = None, *, memory: int = 4096) -> None:
        self.metrics = metrics or default_metrics()
        self.memory = memory
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def _first_sight(self, run: Run) -> bool:
        with self._lock:
            last = self._seen.get(run.run_id)
            if last is not None and run.version <= last:
                return False
            self._seen[run.run_id] = run.version
            self._seen.move_to_end(run.run_id)
            while len(self._seen) > self.memory:
                self._seen.popitem(last=False)
            return True

    def observe(self, run: Run, reason: str) -> None:
        if not self._first_sight(run):
            return
        m, mode = self.metrics, run.kind.value
        now = decided_at(run)
        if run.started_at is not None and run.started_at == now:
            m.runs_started.labels(mode=mode).inc()
        for key, record in finished_by_last_decision(run):
            step = step_label(key)
            outcome = record.outcome or "unknown"
            m.steps.labels(mode=mode, step=step, outcome=outcome).inc()
            if outcome != "skipped" and record.started_at is not None and record.finished_at is not None:
                m.step_duration.labels(mode=mode, step=step).observe(record.finished_at - record.started_at)
            if record.errors:
                m.retries.labels(step=step).inc(record.errors)
        group = str(run.group)
        if run.terminal:
            outcome = run.status.value.lower()
            m.runs.labels(mode=mode, outcome=outcome).inc()
            total = run.total_seconds()
            if total is not None:
                m.run_duration.labels(mode=mode, outcome=outcome).observe(total)
            downtime = run.downtime_seconds()
            if downtime is not None and outcome == "success":
                m.downtime.labels(mode=mode).observe(downtime)
            m.lock_held.labels(group=group).set(0)
        elif run.token is not None:
            m.lock_held.labels(group=group).set(1)


def count_controls(records: Sequence[ControlRecord], metrics: Metrics | None = None) -> None:
    """Count the control requests a committed decision applied or refused (each counted once: the
    decision that decided it is committed once, by compare-and-set)."""
    counter = (metrics or default_metrics()).controls
    for record in records:
        counter.labels(action=record.action.value, outcome=record.outcome.value).inc()


def observe_admission(waits: Sequence[float], metrics: Metrics | None = None) -> None:
    """Runs just admitted, each after waiting that many seconds in the admission queue."""
    histogram = (metrics or default_metrics()).admission_wait
    for seconds in waits:
        histogram.observe(max(0.0, seconds))


def observe_wake(step: str, latency: float, metrics: Metrics | None = None) -> None:
    """A wait step's attempt woken by a watch event, ``latency`` seconds after the event."""
    chosen = metrics or default_metrics()
    chosen.wakes.labels(step=step).inc()
    chosen.wake_latency.labels(step=step).observe(latency)


def set_heartbeat_age(group: str, cluster: str, seconds: float, metrics: Metrics | None = None) -> None:
    """Record how old the cluster's last heartbeat for ``group`` (``namespace/name``) is; each group's
    heartbeat is its own item, so one cluster has one age per group (set by the health checker)."""
    (metrics or default_metrics()).heartbeat_age.labels(group=group, cluster=cluster).set(seconds)


def set_predicted_rto(forecast: Forecast, group: str, metrics: Metrics | None = None) -> None:
    """Publish ``forecast`` per mode and quantile (a mode without history is not published)."""
    gauge = (metrics or default_metrics()).predicted_rto
    for mode in forecast.modes:
        if mode.total is None:
            continue
        for quantile, seconds in (("0.5", mode.total.p50), ("0.95", mode.total.p95)):
            gauge.labels(group=group, mode=mode.mode, quantile=quantile).set(seconds)


class ScrapedGauge(Collector):
    """A gauge read at scrape time through ``read`` (label value -> number), e.g.
    ``failover_queue_depth{queue}`` (Redis LLEN per queue) or ``failover_admission_queued_runs{lane}``.

    The reader belongs to whoever owns the Redis client (``workers.store``, ``workers.admission``); a
    failing read drops the samples of that scrape and logs why, it never fails the scrape.
    """

    def __init__(self, name: str, documentation: str, label: str, read: ScrapeReader) -> None:
        self.name, self.documentation, self.label, self.read = name, documentation, label, read

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=[self.label])

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            values = dict(self.read())
        except Exception as error:
            event = f"metrics.{self.name.removeprefix('failover_')}_failed"
            log.warning(event, error=f"{type(error).__name__}: {error}")
            values = {}
        for key, value in sorted(values.items()):
            family.add_metric([key], float(value))
        yield family


def queue_depth_gauge(read: ScrapeReader) -> ScrapedGauge:
    return ScrapedGauge("failover_queue_depth", "Messages waiting in each Celery queue.", "queue", read)


def admission_queued_gauge(read: ScrapeReader) -> ScrapedGauge:
    return ScrapedGauge(
        "failover_admission_queued_runs",
        "Runs waiting for admission (workers.admission), by lane (interactive, bulk).",
        "lane",
        read,
    )


# --- serving ---------------------------------------------------------------------------------------


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def clear_multiprocess_dir(path: Path | None = None) -> None:
    """Remove the sample files of earlier processes. Call once, before any worker process starts."""
    path = path or multiprocess_dir()
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def serving_registry() -> CollectorRegistry:
    """What to serve: the sum over every process's files in multiprocess mode, else this process."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return registry


def start_metrics_server(
    port: int = DEFAULT_PORT,
    addr: str = "0.0.0.0",  # scraped from other pods; the NetworkPolicy limits who may
    *,
    queue_depth: ScrapeReader | None = None,
    admission_queued: ScrapeReader | None = None,
    registry: CollectorRegistry | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``port`` from a daemon thread; returns the server and its thread.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) the served registry sums every process's
    files; call this in one process only (the Celery parent, via :func:`connect_celery_signals`).
    """
    registry = registry or serving_registry()
    if queue_depth is not None:
        registry.register(queue_depth_gauge(queue_depth))
    if admission_queued is not None:
        registry.register(admission_queued_gauge(admission_queued))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics.serving", port=server.server_port, multiprocess=multiprocess_dir() is not None)
    return server, thread


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges (multiprocess mode only; counters and histograms stay)."""
    path = multiprocess_dir()
    if path is not None:
        prometheus_multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def connect_celery_signals(
    port: int = DEFAULT_PORT,
    *,
    queue_depth: ScrapeReader | None = None,
    admission_queued: ScrapeReader | None = None,
) -> Callable[[], None]:
    """Serve metrics from the Celery worker's parent process; clean up after each pool process.

    ``worker_init`` runs in the parent before the pool forks: clear the multiprocess directory, then
    serve. ``worker_process_shutdown`` runs in each pool process as it exits. Returns a function that
    disconnects both receivers again.
    """
    from celery.signals import worker_init, worker_process_shutdown

    def _serve(**_: Any) -> None:
        clear_multiprocess_dir()
        start_metrics_server(port, queue_depth=queue_depth, admission_queued=admission_queued)

    def _process_exit(pid: int | None = None, **_: Any) -> None:
        mark_process_dead(pid or os.getpid())

    worker_init.connect(_serve, weak=False)
    worker_process_shutdown.connect(_process_exit, weak=False)

    def disconnect() -> None:
        worker_init.disconnect(_serve)
        worker_process_shutdown.disconnect(_process_exit)

    return disconnect
