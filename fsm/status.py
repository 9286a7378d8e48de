"""A Failover's status and Events as a function of the Failover and its runs (pure).

Status is level-triggered: whoever writes it (the watcher's reconciler) reads the Failover object and
the runs of the groups it lists, computes the whole status with :func:`failover_status` and writes it
when it differs from what the object shows. Nothing here depends on the order or the number of
observations, so a write that failed is simply made again on the next pass, and two writers compute
the same status. The Events that describe a run are derived from the run's step records with
deterministic names (:func:`run_events`), so they can be created "if absent" any number of times.

Kubernetes objects are plain dicts here; times are seconds since the epoch passed in by the caller
(``now`` is used only for a condition that flips and for the start of a step not yet reported back).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fsm.audit import ControlOutcome, ControlRecord
from fsm.models import GROUP_VERSION
from fsm.plan import Phase
from fsm.run import Run, RunStatus

Obj = dict[str, Any]
COMPONENT = "failover-orchestrator"
TERMINAL = frozenset({RunStatus.SUCCESS.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value})
WAITING_FOR_A_WORKER = "submitted; waiting for a worker"
PAUSED = "PAUSED"  # status.state (and ``failoverctl watch``) of a run an operator paused
_REASONS = {
    "PENDING": "Pending",
    "IN_PROGRESS": "InProgress",
    "SUCCESS": "Succeeded",
    "FAILED": "Failed",
    "CANCELLED": "Cancelled",
}


def iso(seconds: float | None) -> str | None:
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


def aggregate(statuses: Sequence[str]) -> str:
    """The Failover's status from its groups': failed only once nothing runs any more (CANCELLED when
    none failed and one was cancelled)."""
    if not statuses or all(s == RunStatus.PENDING.value for s in statuses):
        return RunStatus.PENDING.value
    if all(s == RunStatus.SUCCESS.value for s in statuses):
        return RunStatus.SUCCESS.value
    if all(s in TERMINAL for s in statuses):
        if RunStatus.FAILED.value not in statuses:
            return RunStatus.CANCELLED.value
        return RunStatus.FAILED.value
    return RunStatus.IN_PROGRESS.value


def is_terminal(failover: Mapping[str, Any]) -> bool:
    """Whether the object's status already says SUCCESS, FAILED or CANCELLED (nothing left to do)."""
    status = failover.get("status")
    return isinstance(status, Mapping) and status.get("status") in TERMINAL


def requested_groups(failover: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(namespace, name)`` of every group the Failover lists (namespace defaults to its own)."""
    meta = failover.get("metadata") or {}
    groups = []
    for requested in (failover.get("spec") or {}).get("failoverGroups") or []:
        if isinstance(requested, Mapping) and requested.get("name"):
            groups.append((str(requested.get("namespace") or meta.get("namespace")), str(requested["name"])))
    return groups


def _where(run: Run, key: str) -> str:
    if key.startswith("undo:"):
        _, index, _step = key.split(":", 2)
        cluster = run.compensation[int(index)].cluster if int(index) < len(run.compensation) else None
    else:
        planned = next((p for p in run.plan if p.step.value == key), None)
        cluster = run.cluster_for(planned.side) if planned else None
    return f" on {cluster}" if cluster else ""


def progress_message(run: Run) -> str:
    """What a run is doing, from the run alone: its message once it has one, else its current step."""
    if run.paused:
        return paused_message(run)
    if run.message:
        return run.message
    if run.status is RunStatus.PENDING or run.dispatch is None:
        return WAITING_FOR_A_WORKER
    key = run.step_key
    record = run.steps.get(key)
    text = f"step {key}{_where(run, key)}"
    return f"{text}: {record.message}" if record is not None and record.message else text


def display_state(run: Run) -> str:
    """``status.state`` as people read it: ``PAUSED`` while an operator holds the run, else its state."""
    return PAUSED if run.paused and not run.terminal else run.state_name


def paused_message(run: Run) -> str:
    pause = next((c for c in reversed(run.controls) if c.action.value == "pause" and not c.pending), None)
    by = f" by {pause.who} ({pause.why})" if pause is not None else ""
    return f"paused{by} before step {run.step_key}; `failoverctl run resume {run.run_id} --reason ...`"


def last_control(run: Run) -> ControlRecord | None:
    return run.controls[-1] if run.controls else None


def group_entry(run: Run) -> Obj:
    """The run's entry in ``status.failoverGroups[]``."""
    step = run.current_step if not run.terminal else None
    entry: Obj = {
        "name": run.group.name,
        "namespace": run.group.namespace,
        "status": run.status.value,
        "startTime": iso(run.started_at or run.created_at),
        "completionTime": iso(run.finished_at),
        "message": progress_message(run),
        "currentStep": step.value if step else None,
        "runId": run.run_id,
    }
    return {k: v for k, v in entry.items() if v is not None}


def runs_by_group(failover: Mapping[str, Any], runs: Sequence[Run]) -> dict[tuple[str, str], Run]:
    """The run of each group the Failover lists (the newest, if the store holds several)."""
    wanted = set(requested_groups(failover))
    chosen: dict[tuple[str, str], Run] = {}
    for run in runs:
        key = (run.group.namespace, run.group.name)
        if key in wanted and (key not in chosen or run.created_at >= chosen[key].created_at):
            chosen[key] = run
    return chosen


def conditions(
    previous: Mapping[str, Any], wanted: Sequence[tuple[str, bool, str, str]], generation: Any, now: float
) -> list[Obj]:
    """Conditions ``(type, true, reason, message)``; ``lastTransitionTime`` moves only on a flip."""
    before_by_type = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    conditions = []
    for type_, true, reason, text in wanted:
        value = "True" if true else "False"
        before = before_by_type.get(type_) or {}
        condition: Obj = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": text,
            "lastTransitionTime": before.get("lastTransitionTime", iso(now))
            if before.get("status") == value
            else iso(now),
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        conditions.append(condition)
    return conditions


def failover_status(failover: Mapping[str, Any], runs: Sequence[Run], now: float) -> Obj:
    """The whole ``status`` of ``failover`` given the runs of its groups (others are ignored).

    ``status`` is the groups' aggregate (IN_PROGRESS as soon as any run exists and not all finished;
    FAILED only once every group's run finished and one failed), ``state`` the state of the group that
    decides it (the first still running, else the first failed, else the first), ``message`` the
    run's message (``ns/name: message`` per group when there are several), ``metrics`` the slowest
    group's times (groups move in parallel), and the conditions Ready, Progressing, Failed and
    OperatorActionRequired (a failure past the point of no return).
    """
    meta = failover.get("metadata") or {}
    previous = failover.get("status") if isinstance(failover.get("status"), Mapping) else {}
    assert isinstance(previous, Mapping)
    entries, ordered = _entries(failover, runs)
    overall = aggregate([str(e["status"]) for e in entries])
    if overall == RunStatus.PENDING.value and ordered:
        overall = RunStatus.IN_PROGRESS.value  # submitted: the runs exist, waiting for a worker
    running = [r for r in ordered if not r.terminal]
    failed = [r for r in ordered if r.status is RunStatus.FAILED]
    leads = running or failed or ordered
    state = display_state(leads[0]) if leads else RunStatus.PENDING.value
    if len(entries) == 1:
        message = str(entries[0].get("message") or "")
    else:
        message = "; ".join(
            f"{e['namespace']}/{e['name']}: {e['message']}" for e in entries if e.get("message")
        )
    status: Obj = {
        "status": overall,
        "state": state,
        "message": message,
        "failoverGroups": entries,
        "conditions": conditions(
            previous,
            [*_wanted(overall, state, message, failed), *_control_conditions(ordered)],
            meta.get("generation"),
            now,
        ),
    }
    metrics = _metrics(ordered)
    if metrics:
        status["metrics"] = metrics
    return status


def _entries(failover: Mapping[str, Any], runs: Sequence[Run]) -> tuple[list[Obj], list[Run]]:
    """One ``failoverGroups[]`` entry per requested group (PENDING without a run), and the runs found."""
    chosen = runs_by_group(failover, runs)
    entries: list[Obj] = []
    ordered: list[Run] = []
    for namespace, name in requested_groups(failover):
        run = chosen.get((namespace, name))
        if run is None:
            entries.append({"name": name, "namespace": namespace, "status": RunStatus.PENDING.value})
        else:
            entries.append(group_entry(run))
            ordered.append(run)
    return entries, ordered


def _wanted(overall: str, state: str, message: str, failed: list[Run]) -> list[tuple[str, bool, str, str]]:
    """The conditions as (type, true, reason, message)."""
    failure = "; ".join(r.failure.describe() if r.failure else r.message for r in failed) or message
    superseded = any(r.failure is not None and r.failure.superseded is not None for r in failed)
    diverged = [r for r in failed if r.diverged] if overall == RunStatus.FAILED.value else []
    return [
        ("Ready", overall == "SUCCESS", _REASONS[overall], message),
        (
            "Progressing",
            overall == "IN_PROGRESS",
            _camel(state) if overall == "IN_PROGRESS" else _REASONS[overall],
            message,
        ),
        (
            "Failed",
            overall == "FAILED",
            ("Superseded" if superseded else "StepFailed") if overall == "FAILED" else "NoFailure",
            failure if overall == "FAILED" else "",
        ),
        # A failure past the point of no return is not like any other: nothing was undone, what is
        # active where no longer matches DynamoDB, and only an operator can settle it.
        (
            "OperatorActionRequired",
            bool(diverged),
            "DivergedPastPointOfNoReturn" if diverged else "NoActionNeeded",
            "; ".join(r.message for r in diverged),
        ),
    ]


def _control_conditions(runs: list[Run]) -> list[tuple[str, bool, str, str]]:
    """``Paused`` (an operator holds a run) and ``OperatorControl`` (the newest control of each run that
    has one: who, why, what became of it), so that kubectl and GitOps see controls and refusals. Both
    appear with the first control of any run (none before)."""
    several = len(runs) > 1
    paused = [r for r in runs if r.paused and not r.terminal]
    controlled = [(r, c) for r in runs if (c := last_control(r)) is not None]
    if not controlled:
        return []
    pause_text = "; ".join(
        f"{r.group}: {paused_message(r)}" if several else paused_message(r) for r in paused
    )
    control_text = "; ".join(f"{r.group}: {c.describe()}" if several else c.describe() for r, c in controlled)
    newest = max(controlled, key=lambda pair: pair[1].decided_at or pair[1].at)[1] if controlled else None
    reason = "NoControl"
    if newest is not None:
        reason = _camel(newest.action.value.replace("-", "_")) + _camel(newest.outcome.value)
    return [
        ("Paused", bool(paused), "PausedByOperator" if paused else "NotPaused", pause_text),
        (
            "OperatorControl",
            newest is not None and newest.outcome is not ControlOutcome.REFUSED,
            reason,
            control_text,
        ),
    ]


def _metrics(runs: list[Run]) -> Obj:
    """The slowest group's measured times (groups move in parallel)."""
    metrics: Obj = {}
    for field, values in (
        ("totalFailoverTimeSeconds", [r.total_seconds() for r in runs]),
        ("totalDowntimeSeconds", [r.downtime_seconds() for r in runs]),
    ):
        known = [round(v, 3) for v in values if v is not None]
        if known:
            metrics[field] = max(known)
    return metrics


def needs_write(failover: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether merging ``desired`` into the object's status would change anything."""
    status = failover.get("status") or {}
    return any(status.get(key) != value for key, value in desired.items())


# --- Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEvent:
    """One thing that happened to a run, before it becomes a core/v1 Event."""

    at: float
    key: str
    outcome: str
    reason: str
    message: str
    warning: bool = False


def step_events(run: Run, now: float) -> list[StepEvent]:
    """What happened to ``run`` so far, oldest first: every step started, finished, failed or skipped."""
    group = f"group {run.group}"
    found: list[StepEvent] = []
    for key, record in run.steps.items():
        where = _where(run, key)
        started = record.started_at or 0.0
        finished = record.finished_at or started
        if record.outcome == "skipped":
            text = f"{group}: step {key} skipped: {record.message}"
            found.append(StepEvent(started, key, "skipped", "StepSkipped", text))
            continue
        if record.started_at is not None:
            found.append(
                StepEvent(started, key, "started", "StepStarted", f"{group}: step {key} started{where}")
            )
        if record.outcome == "done":
            text = f"{group}: step {key} finished{where}" + (f": {record.message}" if record.message else "")
            found.append(StepEvent(finished, key, "done", "StepSucceeded", text))
        elif record.outcome == "failed":
            text = f"{group}: step {key} failed{where}: {record.message}"
            found.append(StepEvent(finished, key, "failed", "StepFailed", text, warning=True))
        elif record.outcome == "cancelled":
            text = f"{group}: step {key} interrupted{where}: {record.message}"
            found.append(StepEvent(finished, key, "cancelled", "StepCancelled", text, warning=True))
    if not run.terminal and run.current_step is not None and run.step_key not in run.steps:
        # Dispatched but not reported back yet: it has started (as far as anyone can tell) by now.
        text = f"{group}: step {run.step_key} started{_where(run, run.step_key)}"
        found.append(StepEvent(now, run.step_key, "started", "StepStarted", text))
    found += control_events(run)
    if run.terminal:
        succeeded = run.state is Phase.SUCCEEDED
        cancelled = run.status is RunStatus.CANCELLED
        found.append(
            StepEvent(
                run.finished_at or now,
                "run",
                "succeeded" if succeeded else "cancelled" if cancelled else "failed",
                "FailoverSucceeded" if succeeded else "FailoverCancelled" if cancelled else "FailoverFailed",
                f"{group}: {run.message}",
                warning=not succeeded,
            )
        )
    found.sort(key=lambda event: event.at)
    return found


def control_events(run: Run) -> list[StepEvent]:
    """An Event per control asked and per control applied or refused (a forced skip is a Warning)."""
    found = []
    for control in run.controls:
        key = f"control-{control.id}-{control.action.value}"
        asked = f"group {run.group}: {control.action.value} requested by {control.who} ({control.why})"
        found.append(StepEvent(control.at, key, "requested", "ControlRequested", asked))
        if control.pending:
            continue
        refused = control.outcome is ControlOutcome.REFUSED
        found.append(
            StepEvent(
                control.decided_at or control.at,
                key,
                control.outcome.value,
                "ControlRefused" if refused else "ControlApplied",
                f"group {run.group}: {control.describe()}",
                warning=refused or control.force,
            )
        )
    return found


def _involved(failover: Mapping[str, Any]) -> Obj:
    """The ``involvedObject`` of an Event about ``failover`` (its uid when it has one)."""
    meta = failover.get("metadata") or {}
    involved: Obj = {
        "apiVersion": GROUP_VERSION,
        "kind": "Failover",
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
    }
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    return involved


def _event(
    failover: Mapping[str, Any],
    *,
    name: str,
    reason: str,
    message: str,
    warning: bool,
    at: float,
    action: str,
    instance: str,
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """A core/v1 Event about ``failover``, as every Event of this module is written."""
    metadata: Obj = {"name": name, "namespace": (failover.get("metadata") or {}).get("namespace")}
    if labels:
        metadata["labels"] = dict(labels)
    stamp = iso(at)
    return {
        "metadata": metadata,
        "involvedObject": _involved(failover),
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "action": action,
    }


def run_events(failover: Mapping[str, Any], run: Run, now: float, *, instance: str) -> list[Obj]:
    """The core/v1 Events that describe ``run`` on ``failover``, oldest first, deterministically named
    (Failover, run, step, outcome): creating one that exists answers 409, which means "done"."""
    name = str((failover.get("metadata") or {}).get("name"))
    labels = {"failover.hahomelabs.com/run-id": _label(run.run_id)[:63].strip("-")}
    return [
        _event(
            failover,
            name=event_name(name, run.run_id, event.key, event.outcome),
            reason=event.reason,
            message=event.message,
            warning=event.warning,
            at=event.at,
            action=event.key,
            instance=instance,
            labels=labels,
        )
        for event in step_events(run, now)
    ]


def invalid_event(failover: Mapping[str, Any], text: str, now: float, *, instance: str) -> Obj:
    """The Warning Event that says why ``failover`` is invalid (``text``: ``field: message``), named
    after the object and its uid: creating it again answers 409 (done); a Failover deleted and created
    again under the same name gets its own."""
    meta = failover.get("metadata") or {}
    return _event(
        failover,
        name=event_name(str(meta.get("name")), "invalid", str(meta.get("uid") or "-")),
        reason="InvalidSpec",
        message=f"invalid: {text}; nothing was started",
        warning=True,
        at=now,
        action="Validate",
        instance=instance,
    )
