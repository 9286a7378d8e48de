"""The Failover watcher: lists then watches ``Failover`` objects on every cluster and submits them.

One thread per cluster (kubeconfig context). Each lists the Failovers, handles every one, then watches
from the list's resourceVersion, resuming from the last one seen after each short watch window; a 410
means relist (see :meth:`FailoverWatcher._run_cluster`). A cluster that stops answering is retried with
exponential backoff and jitter while the others carry on. :meth:`FailoverWatcher.stop` ends every thread
within a second or two.

What to do with each Failover is decided by :func:`producers.decisions.decide_failover` (pure): a new
one is checked (its groups read from the same cluster, the target against the active cluster) and
submitted through :meth:`workers.api.Orchestrator.submit` with the active cluster it was checked
against (read once, by :meth:`workers.api.Orchestrator.source_for`), one run per group, deduplicated
by the deterministic run id, so seeing it again (a restart, the same Failover on both clusters) starts
nothing new; a Failover whose runs exist already is not checked again. An invalid one gets FAILED and
a condition naming the field, and nothing is enqueued. Statuses are written through the status
subresource, conditioned on the resourceVersion read, and only when they would change.

The status of a submitted Failover is level-triggered: a thread passes every ``status_interval``
seconds over the Failovers not yet SUCCESS or FAILED (as last seen by list, watch or our own writes)
and makes each one's status match its runs (:class:`producers.failover_status.FailoverStatusReconciler`).
A write that fails is made again on the next pass; workers write no status.

Between watch windows each thread also keeps the ``status`` of every FailoverGroup on its cluster
current (``globalState`` from DynamoDB, ``health`` judged from the real objects the way the health
checker judges them), on an interval, writing only when something changed
(:class:`producers.group_status.GroupStatusWriter`).

This module never runs a step: it only turns objects into submissions and statuses.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from fsm.models import Failover, FailoverGroup, RequestError
from producers.decisions import (
    FailoverAction,
    FailoverDecision,
    decide_failover,
    describe,
    dry_run_plan_status,
    dry_run_status,
    first_error,
    invalid_status,
)
from producers.failover_status import FailoverStatusReconciler
from producers.group_status import GroupStatusWriter
from producers.kube import FAILOVER_GROUPS, FAILOVERS, ClusterClient, Obj, ResourceGone
from producers.watcher_status import StatusReconciliation
from workers.api import Orchestrator, run_ids_for
from workers.errors import OrchestratorError, TemporaryError

log = structlog.get_logger(__name__)

_REMEMBERED = 4096


@dataclass
class ClusterStats:
    """Counters per cluster, for tests and for the logs: how the watch has been going."""

    lists: int = 0
    relists: int = 0
    failures: int = 0
    events: int = 0
    group_status_writes: int = 0
    status_writes: int = 0
    status_write_failures: int = 0


class FailoverWatcher(StatusReconciliation):
    """Watches Failovers on ``clusters`` and submits them through ``orchestrator``.

    Args:
        orchestrator: the narrow workers API (submission, coordination).
        clusters: a client per cluster, by name (the kubeconfig context names).
        operator_id: only groups with this ``operatorID`` (None: every group). A Failover whose groups
            all belong to another orchestrator is left alone; one that mixes both is invalid.
        watch_timeout: seconds of each watch request (``timeoutSeconds``); bounds how long a stop or
            a missed cut connection can take.
        backoff_initial, backoff_max: retry delays for a cluster that fails (doubling, with jitter).
        group_status_interval: seconds between two refreshes of the FailoverGroup statuses.
        max_object_attempts: how often an object whose handling fails for a reason other than a
            TemporaryError is tried before it is left alone (logged).
        status_interval: seconds between two passes of the status reconciler over the Failovers
            that are not yet SUCCESS or FAILED (``FAILOVER_STATUS_INTERVAL``).
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        clusters: Mapping[str, ClusterClient],
        *,
        operator_id: str | None = None,
        watch_timeout: int = 2,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        group_status_interval: float = 30.0,
        max_object_attempts: int = 5,
        status_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.clusters = dict(clusters)
        self.operator_id = operator_id
        self.watch_timeout = watch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.group_status_interval = group_status_interval
        self.stats = {name: ClusterStats() for name in self.clusters}
        self._clock = clock
        self._random = rng or random.Random()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._submit_lock = threading.Lock()
        self._logged: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._logged_lock = threading.Lock()
        self._conflicts = threading.local()
        self.max_object_attempts = max_object_attempts
        self._object_failures: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self.group_statuses = GroupStatusWriter(
            orchestrator, self.clusters, operator_id=operator_id, log_once=self._log_once
        )
        self.status_interval = status_interval
        self.statuses = FailoverStatusReconciler(
            self.clusters,
            lambda name: orchestrator.runs(failover=name),
            clock=clock,
            on_finished=self._refresh_groups_of,
        )
        # The Failovers not yet SUCCESS or FAILED, as last seen (watch, list, or our own writes).
        self._open: dict[tuple[str, str, str], Obj] = {}
        self._open_lock = threading.Lock()
        self._wake = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FailoverWatcher:
        if self._threads:
            return self
        self._stopping.clear()
        for name in self.clusters:
            thread = threading.Thread(
                target=self._run_cluster, args=(name,), name=f"watch-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        thread = threading.Thread(target=self._run_statuses, name="failover-status", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every thread: cut the open watches and wait (at most ``timeout``) for them to end."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        threads, self._threads = self._threads, []
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            # Repeated: a watch that was being opened when we first cut is cut on the next round.
            for client in self.clusters.values():
                client.stop_watch()
            for thread in threads:
                thread.join(0.05)
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("watcher_threads_still_running", threads=alive, waited=timeout)

    def __enter__(self) -> FailoverWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- one cluster's loop -----------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): doubling up to the cap, half of it random."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return float(ceiling / 2 + self._random.uniform(0, ceiling / 2))

    def _run_cluster(self, name: str) -> None:
        client, stats = self.clusters[name], self.stats[name]
        resource_version: str | None = None
        attempt = 0
        next_group_sync = 0.0
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list(name, client)
                if time.monotonic() >= next_group_sync:
                    self._sync_groups_safely(name)
                    next_group_sync = time.monotonic() + self.group_status_interval
                resource_version = self._watch(name, client, resource_version)
                if attempt:
                    log.info("cluster_answering_again", cluster=name, after_attempts=attempt)
                attempt = 0
            except ResourceGone as error:
                # 410 Gone: the server no longer keeps the changes after our resourceVersion (etcd was
                # compacted, or we were away too long). Whatever happened in between is lost to a
                # watch, so resuming cannot be correct: list again for a consistent state and watch
                # from the list's resourceVersion. Submission is idempotent, so re-handling is safe.
                stats.relists += 1
                log.info("watch_expired_relisting", cluster=name, error=error.describe())
                resource_version = None
            except Exception as error:
                attempt += 1
                stats.failures += 1
                delay = self.backoff(attempt)
                detail = error.describe() if isinstance(error, OrchestratorError) else repr(error)
                log.warning(
                    "cluster_watch_failed",
                    cluster=name,
                    attempt=attempt,
                    next_delay=round(delay, 2),
                    error=detail,
                    next_action=f"retrying in {delay:.2f}s, resuming from resourceVersion {resource_version}"
                    if resource_version
                    else f"relisting in {delay:.2f}s",
                )
                self._stopping.wait(delay)

    def _list(self, name: str, client: ClusterClient) -> str:
        items, resource_version = client.list(FAILOVERS)
        self.stats[name].lists += 1
        with self._open_lock:  # the list is the whole truth: forget what is no longer there
            for key in [k for k in self._open if k[0] == name]:
                del self._open[key]
        for obj in items:
            self._handle_event(name, obj)
        return resource_version

    def _watch(self, name: str, client: ClusterClient, resource_version: str) -> str:
        for event in client.watch(FAILOVERS, resource_version, timeout_seconds=self.watch_timeout):
            if self._stopping.is_set():
                break
            obj = event.get("object") or {}
            if event.get("type") in ("ADDED", "MODIFIED"):
                self.stats[name].events += 1
                self._handle_event(name, obj)
            elif event.get("type") == "DELETED":
                self._remember(name, obj, gone=True)
            # Advance only once the object is handled: after a failure the watch resumes before it.
            resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        return resource_version

    def _sync_groups_safely(self, cluster: str) -> None:
        """Refresh the FailoverGroup statuses; only an unreachable cluster stops the loop's pass."""
        try:
            self.sync_group_statuses(cluster)
        except TemporaryError:
            raise
        except Exception as error:  # e.g. RBAC on failovergroups/status: Failovers still get handled
            detail = error.describe() if isinstance(error, OrchestratorError) else repr(error)
            log.error(
                "group_status_sync_failed",
                cluster=cluster,
                error=detail,
                next_action=f"tried again in {self.group_status_interval:g}s",
            )

    def _handle_event(self, cluster: str, obj: Obj) -> None:
        """Handle one object; failures are retried by the cluster loop (resuming before the object).

        TemporaryErrors are retried until they pass. Anything else (an error the run store does not
        translate, such as a lost Redis connection, or a bug) is retried ``max_object_attempts``
        times, then the object is logged and left alone, so one bad object cannot stall a cluster.
        """
        meta = obj.get("metadata") or {}
        key = (cluster, str(meta.get("uid")), str(meta.get("resourceVersion")))
        self._remember(cluster, obj)
        try:
            self.handle(cluster, obj)
        except TemporaryError:
            raise  # the cluster loop backs off and comes back to this object
        except Exception as error:
            detail = error.describe() if isinstance(error, OrchestratorError) else repr(error)
            with self._logged_lock:
                attempts = self._object_failures.pop(key, 0) + 1
                if attempts < self.max_object_attempts:
                    self._object_failures[key] = attempts
                    while len(self._object_failures) > _REMEMBERED:
                        self._object_failures.popitem(last=False)
            if attempts < self.max_object_attempts:
                raise TemporaryError(
                    f"handling Failover {describe(obj)} failed (attempt {attempts} of "
                    f"{self.max_object_attempts}): {detail}",
                    cluster=cluster,
                ) from error
            log.error(
                "failover_not_handled",
                cluster=cluster,
                failover=describe(obj),
                error=detail,
                attempt=f"{attempts} of {self.max_object_attempts}",
                next_action="left alone until the watcher relists or restarts",
            )
        else:
            with self._logged_lock:
                self._object_failures.pop(key, None)

    # --- one Failover -----------------------------------------------------------------------------

    def handle(self, cluster: str, obj: Obj) -> FailoverDecision:
        """Decide about one Failover object seen on ``cluster`` and do it; returns the decision."""
        decision = decide_failover(obj)
        self._log_once(cluster, obj, decision.action.value, decision.reason)
        now = self._clock()
        if decision.action is FailoverAction.INVALID:
            assert decision.field is not None
            self._mark_invalid(cluster, obj, invalid_status(obj, decision.field, decision.message, now))
        elif decision.action is FailoverAction.DRY_RUN:
            assert decision.failover is not None
            return self._dry_run(cluster, obj, decision.failover, decision)
        elif decision.action is FailoverAction.SUBMIT:
            assert decision.failover is not None
            return self._submit(cluster, obj, decision.failover, decision)
        return decision

    def _log_once(self, cluster: str, obj: Obj, action: str, reason: str) -> None:
        meta = obj.get("metadata") or {}
        key = (cluster, str(meta.get("uid") or describe(obj)))
        with self._logged_lock:
            if self._logged.get(key) == reason:
                return
            self._logged[key] = reason
            while len(self._logged) > _REMEMBERED:
                self._logged.popitem(last=False)
        log.info("failover_decision", cluster=cluster, failover=describe(obj), action=action, reason=reason)

    def _invalid(self, cluster: str, obj: Obj, field: str, message: str) -> FailoverDecision:
        reason = f"Failover {describe(obj)} is invalid: {field}: {message}"
        self._log_once(cluster, obj, FailoverAction.INVALID.value, reason)
        self._mark_invalid(cluster, obj, invalid_status(obj, field, message, self._clock()))
        return FailoverDecision(FailoverAction.INVALID, reason, field=field, message=message)

    def _groups(self, cluster: str, obj: Obj, failover: Failover) -> list[FailoverGroup] | FailoverDecision:
        """The requested groups read from ``cluster``, or the decision that the Failover is invalid."""
        client = self.clusters[cluster]
        groups = []
        for index, (namespace, name) in enumerate(failover.group_namespaces()):
            field = f"spec.failoverGroups[{index}]"
            raw = client.find(FAILOVER_GROUPS, namespace, name)
            if raw is None:
                return self._invalid(
                    cluster,
                    obj,
                    field,
                    f"FailoverGroup {namespace}/{name} does not exist in cluster {cluster}",
                )
            try:
                groups.append(FailoverGroup.model_validate(raw))
            except ValidationError as error:
                bad, message = first_error(error)
                return self._invalid(
                    cluster, obj, field, f"FailoverGroup {namespace}/{name} is invalid: {bad}: {message}"
                )
        return groups

    def _submit(
        self, cluster: str, obj: Obj, failover: Failover, decision: FailoverDecision
    ) -> FailoverDecision:
        if self._already_submitted(failover):
            # Its runs exist (its status write was lost, or it was seen elsewhere first): only the
            # status is missing. Checking it again against the active cluster would be wrong, since
            # its own run may have moved the group already.
            reason = f"Failover {describe(obj)} was submitted already: its status is brought up to date"
            self._log_once(cluster, obj, FailoverAction.SKIP.value, reason)
            self.reconcile_status(cluster, obj)
            return FailoverDecision(FailoverAction.SKIP, reason, failover)
        groups = self._groups(cluster, obj, failover)
        if isinstance(groups, FailoverDecision):
            return groups
        foreign = self._foreign(cluster, obj, failover, groups)
        if foreign is not None:
            return foreign
        sources = self._sources(cluster, obj, failover, groups)
        if isinstance(sources, FailoverDecision):
            return sources
        with self._submit_lock:
            for group, source in zip(groups, sources, strict=True):
                self._submit_group(cluster, obj, failover, group, source)
        self.reconcile_status(cluster, obj)
        return decision

    def _already_submitted(self, failover: Failover) -> bool:
        wanted = set(run_ids_for(failover).values())
        name = f"{failover.metadata.namespace}/{failover.metadata.name}"
        found = {run.run_id for run in self.orchestrator.runs(failover=name)}
        return bool(wanted) and wanted <= found

    def _foreign(
        self, cluster: str, obj: Obj, failover: Failover, groups: Sequence[FailoverGroup]
    ) -> FailoverDecision | None:
        """Skip a Failover whose groups all belong to another orchestrator; refuse one that mixes."""
        if self.operator_id is None:
            return None
        foreign = [i for i, g in enumerate(groups) if g.spec.operator_id != self.operator_id]
        if len(foreign) == len(groups):
            reason = f"Failover {describe(obj)}: its groups belong to another orchestrator"
            self._log_once(cluster, obj, FailoverAction.SKIP.value, reason)
            return FailoverDecision(FailoverAction.SKIP, reason, failover)
        if not foreign:
            return None
        group = groups[foreign[0]]
        return self._invalid(
            cluster,
            obj,
            f"spec.failoverGroups[{foreign[0]}]",
            f"group {group.metadata.namespace}/{group.metadata.name} belongs to operatorID "
            f"{group.spec.operator_id!r}, not {self.operator_id!r}: one Failover cannot mix them",
        )

    def _sources(
        self, cluster: str, obj: Obj, failover: Failover, groups: Sequence[FailoverGroup]
    ) -> list[str] | FailoverDecision:
        """Each group's active cluster, read once and checked against the request.

        Every group is checked before any is submitted, so that a bad second group starts no first
        run; the sources read here are what the runs start from (submit does not read them again).
        """
        known = frozenset(self.orchestrator.settings.clusters) or frozenset(self.clusters)
        sources = []
        for index, group in enumerate(groups):
            try:
                sources.append(self.orchestrator.source_for(failover, group, known_clusters=known))
            except RequestError as error:
                return self._invalid(cluster, obj, self._field(error, index), error.message)
        return sources

    def _submit_group(
        self, cluster: str, obj: Obj, failover: Failover, group: FailoverGroup, source: str
    ) -> None:
        submission = self.orchestrator.submit(failover, group, failover_cluster=cluster, source=source)
        run = submission.run
        log.info(
            "run_submitted" if submission.created else "run_already_submitted",
            cluster=cluster,
            failover=describe(obj),
            group=str(group.key),
            run_id=run.run_id,
        )

    def _dry_run(
        self, cluster: str, obj: Obj, failover: Failover, decision: FailoverDecision
    ) -> FailoverDecision:
        """Plan every group (reading the clusters, writing nothing) and put the plan in the status.

        SUCCESS with a ``DryRun`` condition and ``status.plan`` (per cluster, the objects that would
        change and how) when the plan is clean; PENDING with the problems (missing objects, clusters
        that do not answer) otherwise, planned again when the Failover is seen again. Nothing is
        submitted either way.
        """
        groups = self._groups(cluster, obj, failover)
        if isinstance(groups, FailoverDecision):
            return groups
        reports = []
        for index, group in enumerate(groups):
            try:
                reports.append(self.orchestrator.plan(failover, group))
            except RequestError as error:
                return self._invalid(cluster, obj, self._field(error, index), error.message)
            except OrchestratorError as error:
                log.warning(
                    "dry_run_not_planned", cluster=cluster, failover=describe(obj), error=error.describe()
                )
                status = dry_run_status(obj, self._clock())
                status["message"] = f"{status['message']} (no plan here: {error.describe()})"
                self._write_status(cluster, obj, status)
                return decision
        self._write_status(cluster, obj, dry_run_plan_status(obj, reports, self._clock()))
        return decision

    @staticmethod
    def _field(error: RequestError, index: int) -> str:
        return f"spec.failoverGroups[{index}]" if error.field == "spec.failoverGroups" else error.field

    # --- FailoverGroup statuses ---------------------------------------------------------------------

    def sync_group_statuses(self, cluster: str, now: float | None = None) -> int:
        """Bring the status of every FailoverGroup on ``cluster`` up to date; returns how many changed."""
        written = self.group_statuses.sync(cluster, self._clock() if now is None else now)
        self.stats[cluster].group_status_writes += written
        return written
