"""The Failover status writer: a :class:`~workers.container.RunObserver` that shows runs on the cluster.

After every committed decision the engine calls :meth:`FailoverStatusWriter.observe` with the run.
The writer merges that run into its Failover's ``status`` (the entry of the run's group in
``failoverGroups[]``, the aggregated ``status``, ``state``, ``message``, ``metrics`` and
``conditions``) through the status subresource, conditioned on the ``resourceVersion`` it read and
recomputed on a 409, so that runs of other groups writing at the same time are never clobbered. It
also records a core/v1 Event for every step started, finished, failed or skipped.

Best effort, never in the engine's way: every error is logged and swallowed. Idempotent: a status
that would not change is not written, and Events have deterministic names (Failover, run, step,
outcome), so repeated observations create each Event once (an existing one answers 409
AlreadyExists, which is fine). A late observation of an older, unfinished version of a run whose
entry already says it finished is ignored rather than allowed to turn the clock back.
"""

from __future__ import annotations

import copy
import hashlib
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from fsm.models import API_GROUP, API_VERSION, GROUP_VERSION
from fsm.plan import Phase
from fsm.run import Run, RunStatus
from workers.errors import ConflictError, NotFoundError, OrchestratorError
from workers.kube import KubeClients, Target

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
COMPONENT = "failover-orchestrator"
_TERMINAL = {RunStatus.SUCCESS.value, RunStatus.FAILED.value}
_REMEMBERED_RUNS = 256


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _camel(state_name: str) -> str:
    return "".join(part.capitalize() for part in state_name.split("_"))


def _label(part: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", part.lower()).strip("-") or "x"


def event_name(*parts: str) -> str:
    """A valid, deterministic object name (DNS subdomain, at most 253 characters) for an Event."""
    name = ".".join(_label(p) for p in parts)
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[:236].rstrip('.-')}.{digest}"


@dataclass(frozen=True)
class StepEvent:
    """One thing that happened to a run, before it becomes a core/v1 Event."""

    at: float
    key: str
    outcome: str
    reason: str
    message: str
    warning: bool = False


def aggregate(statuses: list[str]) -> str:
    """The Failover's status from its groups' (pure): failed only once nothing runs any more."""
    if not statuses or all(s == RunStatus.PENDING.value for s in statuses):
        return RunStatus.PENDING.value
    if all(s == RunStatus.SUCCESS.value for s in statuses):
        return RunStatus.SUCCESS.value
    if all(s in _TERMINAL for s in statuses):
        return RunStatus.FAILED.value
    return RunStatus.IN_PROGRESS.value


class FailoverStatusWriter:
    """Writes the Failover objects' status and Events on ``failover_cluster``. See the module docstring.

    Args:
        clients: the per-cluster Kubernetes clients (shared with the effects adapter, or its own).
        failover_cluster: the cluster (kubeconfig context) where the Failover objects live.
        clock: seconds since the epoch, for condition transition times and step-start Events.
        instance: ``reportingInstance`` of the Events (default: this host's name).
    """

    def __init__(
        self,
        clients: KubeClients,
        failover_cluster: str,
        *,
        clock: Callable[[], float] = time.time,
        instance: str | None = None,
        conflict_attempts: int = 5,
    ) -> None:
        self.clients = clients
        self.failover_cluster = failover_cluster
        self.clock = clock
        self.instance = instance or socket.gethostname()
        self.conflict_attempts = conflict_attempts
        self._lock = threading.Lock()
        self._emitted: OrderedDict[str, set[str]] = OrderedDict()

    # --- RunObserver -------------------------------------------------------------------------------

    def observe(self, run: Run, reason: str) -> None:
        """Show ``run`` on its Failover: status first, then Events. Never raises: errors are logged."""
        if not run.failover:  # the orchestrator's own stand-downs have no Failover object
            return
        failover: Obj | None = None
        try:
            failover = self._write_status(run, reason)
        except NotFoundError as error:
            log.info("failover_status.failover_missing", run_id=run.run_id, error=error.describe())
            return
        except Exception as error:
            self._log_failure("status", run, error)
        try:
            self._emit_events(failover or self.clients.get(self._target(run)), run)
        except Exception as error:
            self._log_failure("events", run, error)

    @staticmethod
    def _log_failure(what: str, run: Run, error: Exception) -> None:
        if isinstance(error, OrchestratorError):
            log.warning(
                "failover_status.write_failed",
                what=what,
                run_id=run.run_id,
                failover=run.failover,
                error=error.describe(),
            )
        else:  # a bug: keep the traceback
            log.error(
                "failover_status.write_failed",
                what=what,
                run_id=run.run_id,
                failover=run.failover,
                exc_info=error,
            )

    def cluster_of(self, run: Run) -> str:
        """Where the run's Failover lives: as the submitter recorded it, else this writer's default."""
        return run.failover_cluster or self.failover_cluster

    # --- status ----------------------------------------------------------------------------------

    def _target(self, run: Run) -> Target:
        namespace, _, name = run.failover.partition("/")
        return Target(
            self.cluster_of(run),
            API_GROUP,
            API_VERSION,
            "failovers",
            namespace,
            name,
            f"Failover {run.failover}",
        )

    def _write_status(self, run: Run, reason: str) -> Obj | None:
        """Merge ``run`` into its Failover's status; returns the Failover as last read or written."""
        target = self._target(run)
        conflict: ConflictError | None = None
        for attempt in range(1, self.conflict_attempts + 1):
            failover = self.clients.get(target)
            status = self.status_for(failover, run, reason)
            if status is None or status == failover.get("status"):
                return failover
            rv = failover["metadata"]["resourceVersion"]
            try:
                return self.clients.patch(
                    target, {"metadata": {"resourceVersion": rv}, "status": status}, subresource="status"
                )
            except ConflictError as error:
                conflict = error
                log.info(
                    "failover_status.conflict",
                    run_id=run.run_id,
                    failover=run.failover,
                    attempt=f"{attempt} of {self.conflict_attempts}",
                    next="re-read and re-apply" if attempt < self.conflict_attempts else "give up",
                )
        raise ConflictError(
            f"the status of Failover {run.failover} kept changing: {self.conflict_attempts} writes got 409",
            cluster=target.cluster,
            obj=target.label,
        ) from conflict

    def status_for(self, failover: Obj, run: Run, reason: str) -> Obj | None:
        """The Failover's new status with ``run`` merged in, or None when ``run`` is stale."""
        meta = failover.get("metadata") or {}
        status: Obj = copy.deepcopy(failover.get("status") or {})
        groups = [g for g in status.get("failoverGroups") or [] if isinstance(g, dict)]
        entry = self._group_entry(run, reason)
        key = (run.group.namespace, run.group.name)
        for index, existing in enumerate(groups):
            if (existing.get("namespace"), existing.get("name")) != key:
                continue
            if (
                existing.get("runId") == run.run_id
                and existing.get("status") in _TERMINAL
                and run.status.value not in _TERMINAL
            ):
                return None  # an older version of a run that has already finished
            groups[index] = entry
            break
        else:
            groups.append(entry)
        for requested in (failover.get("spec") or {}).get("failoverGroups") or []:
            namespace = requested.get("namespace") or meta.get("namespace")
            if not any(
                (g.get("namespace"), g.get("name")) == (namespace, requested.get("name")) for g in groups
            ):
                groups.append({"name": requested.get("name"), "namespace": namespace, "status": "PENDING"})

        overall = aggregate([str(g.get("status")) for g in groups])
        if len(groups) == 1:
            message = entry["message"]
        else:
            message = "; ".join(
                f"{g['namespace']}/{g['name']}: {g['message']}" for g in groups if g.get("message")
            )
        status.update(
            status=overall,
            state=run.state_name,
            message=message,
            failoverGroups=groups,
            conditions=self._conditions(status, overall, run, message, meta.get("generation")),
        )
        metrics = dict(status.get("metrics") or {})
        for field, value in (
            ("totalFailoverTimeSeconds", run.total_seconds()),
            ("totalDowntimeSeconds", run.downtime_seconds()),
        ):
            if value is not None:
                seconds = round(value, 3)
                # Groups move in parallel: the Failover took as long as its slowest group.
                metrics[field] = max(seconds, metrics.get(field, 0)) if len(groups) > 1 else seconds
        if metrics:
            status["metrics"] = metrics
        return status

    @staticmethod
    def _group_entry(run: Run, reason: str) -> Obj:
        step = run.current_step if not run.terminal else None
        entry: Obj = {
            "name": run.group.name,
            "namespace": run.group.namespace,
            "status": run.status.value,
            "startTime": _iso(run.started_at),
            "completionTime": _iso(run.finished_at),
            "message": run.message or reason,
            "currentStep": step.value if step else None,
            "runId": run.run_id,
        }
        return {k: v for k, v in entry.items() if v is not None}

    def _conditions(self, status: Obj, overall: str, run: Run, message: str, generation: Any) -> list[Obj]:
        reasons = {
            "PENDING": "Pending",
            "IN_PROGRESS": "InProgress",
            "SUCCESS": "Succeeded",
            "FAILED": "Failed",
        }
        failure = run.failure.describe() if run.failure else message
        fenced = run.failure is not None and run.failure.superseded is not None
        diverged = run.diverged and overall == "FAILED"
        wanted = [
            ("Ready", overall == "SUCCESS", reasons[overall], message),
            (
                "Progressing",
                overall == "IN_PROGRESS",
                _camel(run.state_name) if overall == "IN_PROGRESS" else reasons[overall],
                message,
            ),
            (
                "Failed",
                overall == "FAILED",
                ("Superseded" if fenced else "StepFailed") if overall == "FAILED" else "NoFailure",
                failure if overall == "FAILED" else "",
            ),
            # A failure past the point of no return is not like any other: nothing was undone, what
            # is active where no longer matches DynamoDB, and only an operator can settle it.
            (
                "OperatorActionRequired",
                diverged,
                "DivergedPastPointOfNoReturn" if diverged else "NoActionNeeded",
                run.message if diverged else "",
            ),
        ]
        previous = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
        now = _iso(self.clock())
        conditions = []
        for type_, true, reason, text in wanted:
            value = "True" if true else "False"
            before = previous.get(type_) or {}
            condition: Obj = {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": text,
                # Changes only when the status flips, as meta.SetStatusCondition does.
                "lastTransitionTime": before.get("lastTransitionTime", now)
                if before.get("status") == value
                else now,
            }
            if generation is not None:
                condition["observedGeneration"] = generation
            conditions.append(condition)
        return conditions

    # --- Events ----------------------------------------------------------------------------------

    def _emit_events(self, failover: Obj, run: Run) -> None:
        meta = failover.get("metadata") or {}
        namespace, uid = str(meta.get("namespace")), meta.get("uid")
        with self._lock:
            emitted = self._emitted.get(run.run_id)
        if emitted is None:
            # First sight of this run in this process: learn what other workers already recorded.
            selector = f"involvedObject.uid={uid}" if uid else f"involvedObject.name={meta.get('name')}"
            emitted = self.clients.event_names(self.cluster_of(run), namespace, field_selector=selector)
            with self._lock:
                self._emitted[run.run_id] = emitted
                while len(self._emitted) > _REMEMBERED_RUNS:
                    self._emitted.popitem(last=False)
        for event in self.events_for(failover, run):
            name = event["metadata"]["name"]
            if name in emitted:
                continue
            self.clients.create_event(self.cluster_of(run), namespace, event)
            emitted.add(name)

    def events_for(self, failover: Obj, run: Run) -> list[Obj]:
        """The Events that describe ``run`` so far, oldest first, with deterministic names."""
        meta = failover.get("metadata") or {}
        group = f"group {run.group}"
        found: list[StepEvent] = []
        for key, record in run.steps.items():
            where = self._where(run, key)
            started = record.started_at or 0.0
            finished = record.finished_at or started
            if record.outcome == "skipped":
                text = f"{group}: step {key} skipped: {record.message}"
                found.append(StepEvent(started, key, "skipped", "StepSkipped", text))
                continue
            if record.started_at is not None:
                text = f"{group}: step {key} started{where}"
                found.append(StepEvent(started, key, "started", "StepStarted", text))
            if record.outcome == "done":
                text = f"{group}: step {key} finished{where}" + (
                    f": {record.message}" if record.message else ""
                )
                found.append(StepEvent(finished, key, "done", "StepSucceeded", text))
            elif record.outcome == "failed":
                text = f"{group}: step {key} failed{where}: {record.message}"
                found.append(StepEvent(finished, key, "failed", "StepFailed", text, warning=True))
        if not run.terminal and run.current_step is not None and run.step_key not in run.steps:
            # Dispatched but not reported back yet: it starts now.
            text = f"{group}: step {run.step_key} started{self._where(run, run.step_key)}"
            found.append(StepEvent(self.clock(), run.step_key, "started", "StepStarted", text))
        if run.terminal:
            succeeded = run.state is Phase.SUCCEEDED
            found.append(
                StepEvent(
                    run.finished_at or self.clock(),
                    "run",
                    "succeeded" if succeeded else "failed",
                    "FailoverSucceeded" if succeeded else "FailoverFailed",
                    f"{group}: {run.message}",
                    warning=not succeeded,
                )
            )
        found.sort(key=lambda event: event.at)
        return [self._event(meta, run, event) for event in found]

    @staticmethod
    def _where(run: Run, key: str) -> str:
        if key.startswith("undo:"):
            _, index, _step = key.split(":", 2)
            cluster = run.compensation[int(index)].cluster if int(index) < len(run.compensation) else None
        else:
            planned = next((p for p in run.plan if p.step.value == key), None)
            cluster = run.cluster_for(planned.side) if planned else None
        return f" on {cluster}" if cluster else ""

    def _event(self, meta: Obj, run: Run, event: StepEvent) -> Obj:
        involved: Obj = {
            "apiVersion": GROUP_VERSION,
            "kind": "Failover",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
        }
        if meta.get("uid"):
            involved["uid"] = meta["uid"]
        stamp = _iso(event.at)
        return {
            "metadata": {
                "name": event_name(str(meta.get("name")), run.run_id, event.key, event.outcome),
                "namespace": meta.get("namespace"),
                "labels": {"failover.hahomelabs.com/run-id": _label(run.run_id)[:63].strip("-")},
            },
            "involvedObject": involved,
            "reason": event.reason,
            "message": event.message[:1024],
            "type": "Warning" if event.warning else "Normal",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "action": event.key,
        }
