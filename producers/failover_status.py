"""The Failover status reconciler: makes each Failover's ``status`` match its runs, level-triggered.

The watcher calls :meth:`FailoverStatusReconciler.reconcile` for every Failover that is not yet
SUCCESS or FAILED, on an interval and when it submits one. Each call reads the runs of the groups the
Failover lists from the run store (one Redis round trip), computes the whole status with the pure
:func:`fsm.status.failover_status`, and writes it through the status subresource only when it differs
from what the object shows, in one merge patch conditioned on the ``resourceVersion`` it was computed
from. A write that fails (409, 5xx, a cluster that does not answer, RBAC) raises to the caller, which
tries again on its next pass with the object as it then stands: a lost write is healed, never lost,
and the steps of a run never wait for any of it (workers write no status).

Events: one core/v1 Event per step started, finished, failed or skipped, derived from the run's step
records with deterministic names (:func:`fsm.status.run_events`). Each is created once: the names
known to exist are kept in memory per run (created, or answered 409 AlreadyExists), so nothing is ever
listed; after a restart the Events of runs still in flight are created again and answer 409. Events
are written before the status, so that a Failover whose status says it finished has its last Events.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from fsm.models import Failover
from fsm.run import Run
from fsm.status import TERMINAL, failover_status, is_terminal, needs_write, run_events
from producers.decisions import describe
from producers.kube import FAILOVERS, ClusterClient, Obj
from workers.api import run_ids_for
from workers.errors import OrchestratorError

log = structlog.get_logger(__name__)

RunsOf = Callable[[str], Sequence[Run]]
# Told once per run when the reconciler first sees it finished (SUCCESS or FAILED).
OnFinished = Callable[[Run], None]
_REMEMBERED_RUNS = 4096


@dataclass
class ReconcileStats:
    """Counters for tests and logs: what the reconciler has done so far."""

    checked: int = 0
    writes: int = 0
    events: int = 0
    event_failures: int = 0


class FailoverStatusReconciler:
    """Writes Failover statuses and Events computed from the runs. Thread-safe.

    Args:
        clusters: a client per cluster, by name (the cluster where each Failover object is seen).
        runs_of: the runs of a Failover (``namespace/name``) as the run store returns them.
        clock: seconds since the epoch, for conditions that flip and for steps not reported back.
        instance: ``reportingInstance`` of the Events (default: this host's name).
    """

    def __init__(
        self,
        clusters: Mapping[str, ClusterClient],
        runs_of: RunsOf,
        *,
        clock: Callable[[], float] = time.time,
        instance: str | None = None,
        on_finished: OnFinished | None = None,
    ) -> None:
        self.clusters = clusters
        self.runs_of = runs_of
        self.on_finished = on_finished
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.clock = clock
        self.instance = instance or socket.gethostname()
        self.stats = ReconcileStats()
        self._lock = threading.RLock()
        self._emitted: OrderedDict[tuple[str, str], set[str]] = OrderedDict()

    def runs_for(self, obj: Mapping[str, Any]) -> list[Run]:
        """The runs of the groups ``obj`` lists: those whose id is the one its spec gives each group."""
        try:
            failover = Failover.model_validate(obj)
        except ValidationError:
            return []  # invalid: the watcher shows why; no run was ever submitted for it
        ids = set(run_ids_for(failover).values())
        return [run for run in self.runs_of(describe(obj)) if run.run_id in ids]

    def desired(self, obj: Mapping[str, Any], runs: Sequence[Run] | None = None) -> Obj | None:
        """The status ``obj`` should show, or None when it has no runs (nothing to reconcile yet)."""
        runs = self.runs_for(obj) if runs is None else runs
        return failover_status(obj, runs, self.clock()) if runs else None

    def reconcile(self, cluster: str, obj: Obj) -> Obj:
        """Make ``obj``'s status (seen on ``cluster``) match its runs; returns the object as it now is.

        Raises what the write raised (ConflictError when the object changed since it was read,
        NotFoundError when it is gone, TemporaryError, ...): the caller retries on its next pass.
        """
        if is_terminal(obj):
            return obj
        runs = self.runs_for(obj)
        if not runs:
            return obj
        self._announce_finished(runs)
        with self._lock:
            self.stats.checked += 1
            now = self.clock()
            self._emit_events(cluster, obj, runs, now)
            status = failover_status(obj, runs, now)
            if not needs_write(obj, status):
                if status["status"] in TERMINAL:
                    self._forget(cluster, runs)
                return obj
            meta = obj.get("metadata") or {}
            written = self.clusters[cluster].patch_status(
                FAILOVERS,
                str(meta.get("namespace") or "default"),
                str(meta.get("name")),
                status,
                resource_version=meta.get("resourceVersion"),
            )
            self.stats.writes += 1
            if status["status"] in TERMINAL:
                self._forget(cluster, runs)
            log.info(
                "failover_status_written",
                cluster=cluster,
                failover=describe(obj),
                status=status["status"],
                state=status["state"],
            )
            return written

    # --- Events ------------------------------------------------------------------------------------

    def _emit_events(self, cluster: str, obj: Obj, runs: Sequence[Run], now: float) -> None:
        """Create the Events not yet known to exist; best effort (the next pass tries again)."""
        namespace = str((obj.get("metadata") or {}).get("namespace") or "default")
        client = self.clusters[cluster]
        for run in runs:
            known = self._emitted.get((cluster, run.run_id))
            if known is None:
                known = self._emitted[(cluster, run.run_id)] = set()
                while len(self._emitted) > _REMEMBERED_RUNS:
                    self._emitted.popitem(last=False)
            for event in run_events(obj, run, now, instance=self.instance):
                name = event["metadata"]["name"]
                if name in known:
                    continue
                try:
                    if client.create_event(namespace, event):
                        self.stats.events += 1
                except OrchestratorError as error:
                    self.stats.event_failures += 1
                    log.warning(
                        "failover_events_not_written",
                        cluster=cluster,
                        failover=describe(obj),
                        run_id=run.run_id,
                        error=error.describe(),
                        next_action="created on the next pass",
                    )
                    return
                known.add(name)

    def _announce_finished(self, runs: Sequence[Run]) -> None:
        """Tell ``on_finished`` (once per run) of the runs seen finished for the first time, before the
        Failover's own status is written: the watcher refreshes their groups' statuses at once."""
        if self.on_finished is None:
            return
        with self._lock:
            new = [run for run in runs if run.terminal and run.run_id not in self._finished]
            for run in new:
                self._finished[run.run_id] = None
            while len(self._finished) > _REMEMBERED_RUNS:
                self._finished.popitem(last=False)
        for run in new:
            try:
                self.on_finished(run)
            except Exception as error:  # best effort: the periodic refresh catches up
                log.warning("run_finished_hook_failed", run_id=run.run_id, error=repr(error))

    def _forget(self, cluster: str, runs: Sequence[Run]) -> None:
        for run in runs:
            if run.terminal:
                self._emitted.pop((cluster, run.run_id), None)
