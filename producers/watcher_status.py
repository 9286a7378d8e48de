"""The watcher's level-triggered Failover statuses: a pass every ``status_interval`` seconds (and on
every Failover seen) over the Failovers not finished yet, each brought in line with its runs by
:class:`producers.failover_status.FailoverStatusReconciler`. A write that fails is tried again on the
next pass, so a lost write is healed, not lost. A mixin of :class:`producers.watcher.FailoverWatcher`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from fsm.run import Run
from fsm.status import invalid_event, is_terminal
from producers.decisions import describe, needs_write
from producers.failover_status import FailoverStatusReconciler
from producers.group_status import GroupStatusWriter
from producers.kube import FAILOVERS, ClusterClient, Obj
from producers.watcher_controls import apply_annotation_controls
from workers.errors import ConflictError, NotFoundError, OrchestratorError

if TYPE_CHECKING:
    from producers.watcher import ClusterStats
    from workers.api import Orchestrator

log = structlog.get_logger(__name__)


class StatusReconciliation:
    """The part of the watcher that owns Failover statuses (its state is set up by the watcher)."""

    orchestrator: Orchestrator
    clusters: dict[str, ClusterClient]
    stats: Mapping[str, ClusterStats]
    statuses: FailoverStatusReconciler
    group_statuses: GroupStatusWriter
    status_interval: float
    _open: dict[tuple[str, str, str], Obj]
    _open_lock: threading.Lock
    _wake: threading.Event
    _stopping: threading.Event
    _conflicts: threading.local

    def _refresh_groups_of(self, run: Run) -> None:
        """A run just finished: its FailoverGroup's status (active cluster, last failover, health) is
        brought up to date on every cluster now, not at the next periodic refresh. A cluster that
        fails is logged and caught up by that periodic refresh."""
        now = self.statuses.clock()
        for cluster in self.clusters:
            try:
                written = self.group_statuses.sync_group(cluster, run.group.namespace, run.group.name, now)
            except Exception as error:
                detail = error.describe() if isinstance(error, OrchestratorError) else repr(error)
                log.warning(
                    "group_status_not_refreshed",
                    cluster=cluster,
                    group=str(run.group),
                    run_id=run.run_id,
                    error=detail,
                    next_action="refreshed by the periodic group status sync",
                )
                continue
            self.stats[cluster].group_status_writes += written

    def handle(self, cluster: str, obj: Obj) -> object:
        raise NotImplementedError  # the watcher's: decide what a Failover needs and do it

    def _log_once(self, cluster: str, obj: Obj, action: str, reason: str) -> None:
        raise NotImplementedError  # the watcher's

    def _remember(self, cluster: str, obj: Obj, *, gone: bool = False) -> None:
        """Keep the newest copy of each Failover that is not finished yet (the reconciler's work)."""
        meta = obj.get("metadata") or {}
        key = (cluster, str(meta.get("namespace") or "default"), str(meta.get("name")))
        with self._open_lock:
            known = self._open.get(key)
            if gone or is_terminal(obj):
                self._open.pop(key, None)
            elif known is None or _newer(obj, known):
                self._open[key] = obj
                if known is None:
                    self._wake.set()

    def reconcile_status(self, cluster: str, obj: Obj) -> Obj:
        """Bring one Failover's status in line with its runs now; on a 409 read it again and retry once.

        Failures are left to the next pass of the reconciler (the object stays on its list). The control
        annotations are turned into requests first (:mod:`producers.watcher_controls`).
        """
        try:
            apply_annotation_controls(
                self.orchestrator, obj, warn_once=lambda text: self._log_once(cluster, obj, "control", text)
            )
        except OrchestratorError as error:
            log.warning("failover_control_not_requested", failover=describe(obj), error=error.describe())
        current = obj
        for attempt in (1, 2):
            try:
                current = self.statuses.reconcile(cluster, current)
            except ConflictError:
                fresh = self._reread(cluster, current)
                if fresh is None:
                    return current
                current = fresh
                if attempt == 1:
                    continue
                self.stats[cluster].status_write_failures += 1
            except NotFoundError:
                self._remember(cluster, current, gone=True)
                return current
            except OrchestratorError as error:
                self.stats[cluster].status_write_failures += 1
                log.warning(
                    "failover_status_not_written",
                    cluster=cluster,
                    failover=describe(current),
                    error=error.describe(),
                    next_action=f"tried again in {self.status_interval:g}s",
                )
            else:
                if current is not obj:
                    self.stats[cluster].status_writes += 1
            break
        self._remember(cluster, current)
        return current

    def _reread(self, cluster: str, obj: Obj) -> Obj | None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        try:
            fresh = self.clusters[cluster].find(FAILOVERS, namespace, name)
        except OrchestratorError as error:
            log.info(
                "failover_status_reread_failed",
                cluster=cluster,
                failover=describe(obj),
                error=error.describe(),
            )
            return None
        self._remember(cluster, fresh or obj, gone=fresh is None)
        return fresh

    def reconcile_statuses(self) -> int:
        """One pass over every Failover not yet finished; returns how many statuses were written."""
        with self._open_lock:
            work = list(self._open.items())
        written = 0
        for (cluster, _namespace, _name), obj in work:
            if self._stopping.is_set():
                break
            try:
                if self.reconcile_status(cluster, obj) is not obj:
                    written += 1
            except Exception as error:  # e.g. Redis does not answer: the next pass tries again
                detail = error.describe() if isinstance(error, OrchestratorError) else repr(error)
                log.warning(
                    "failover_status_pass_failed",
                    cluster=cluster,
                    failover=describe(obj),
                    error=detail,
                    next_action=f"tried again in {self.status_interval:g}s",
                )
        return written

    def _run_statuses(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self.reconcile_statuses()
            self._wake.wait(self.status_interval)

    def _mark_invalid(self, cluster: str, obj: Obj, status: Mapping[str, Any]) -> bool:
        """Show an invalid Failover as such: a Warning Event saying why (``kubectl describe`` and
        ``kubectl get events`` show it), then FAILED with a condition naming the field. The Event is
        created when the status is about to change (once per object; 409 means it exists): a failed
        creation is logged and the status still written."""
        if not needs_write(obj, status):
            return False
        event = invalid_event(
            obj,
            str(status["message"]).removeprefix("invalid: "),
            self.statuses.clock(),
            instance=self.statuses.instance,
        )
        try:
            self.clusters[cluster].create_event(str(event["metadata"]["namespace"] or "default"), event)
        except OrchestratorError as error:
            log.warning(
                "invalid_failover_event_not_written",
                cluster=cluster,
                failover=describe(obj),
                error=error.describe(),
                next_action="the status still says why",
            )
        return self._write_status(cluster, obj, status)

    def _write_status(self, cluster: str, obj: Obj, status: Mapping[str, Any]) -> bool:
        """Patch the Failover's status if it would change, conditioned on the resourceVersion read.

        On a 409 someone else (another watcher, the status reconciler) wrote first: read the
        object again and decide again (twice at most; then the cluster loop backs off and resumes).
        """
        if not needs_write(obj, status):
            return False
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        client = self.clusters[cluster]
        try:
            client.patch_status(
                FAILOVERS, namespace, name, status, resource_version=meta.get("resourceVersion")
            )
        except NotFoundError:
            return False  # deleted meanwhile: nothing to show the status on
        except ConflictError:
            depth = getattr(self._conflicts, "depth", 0)
            if depth >= 2:
                raise
            self._conflicts.depth = depth + 1
            try:
                fresh = client.find(FAILOVERS, namespace, name)
                if fresh is not None:
                    self.handle(cluster, fresh)
            finally:
                self._conflicts.depth = depth
            return False
        return True


def _newer(obj: Obj, than: Obj) -> bool:
    """Whether ``obj`` is a later copy than ``than`` (resourceVersions compared as numbers if they are)."""
    new = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    old = str((than.get("metadata") or {}).get("resourceVersion") or "")
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True
