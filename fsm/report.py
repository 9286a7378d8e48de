"""The report of a finished run (or of a drill: a failover and its failback), as data.

Pure: :func:`report_from_run` and :func:`report_from_history` turn a run (from Redis) or its history
record (from DynamoDB, once Redis has let the run go) into a :class:`RunReport`; a
:class:`DrillReport` gathers the runs of one drill. ``producers.report_page`` renders it as one HTML
page, ``to_dict`` as JSON.

RTO here is measured, not estimated: from the run's start to its completion. The downtime window is
:func:`fsm.timeline.downtime_window`. The verdict compares the RTO with the group's
``spec.objectives.rto``: PASS within it, FAIL beyond it or when the run did not succeed, NO_OBJECTIVE
when the group sets none (then only the run's outcome counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from fsm.forecast import seconds_text
from fsm.plan import Side
from fsm.run import Run
from fsm.timeline import StepTiming, downtime_window, timeline_of

COORDINATION_LANE = "DynamoDB (coordination)"


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    NO_OBJECTIVE = "NO_OBJECTIVE"


def judge(outcome: str, rto: float | None, objective: float | None, message: str = "") -> tuple[Verdict, str]:
    """The verdict on one run, and why in one sentence."""
    if outcome != "SUCCESS":
        return Verdict.FAIL, f"the run ended {outcome}" + (f": {message}" if message else "")
    if objective is None:
        return Verdict.NO_OBJECTIVE, "the group sets no spec.objectives.rto; the run succeeded"
    if rto is None:
        return Verdict.FAIL, "the run's duration is unknown"
    if rto <= objective:
        return Verdict.PASS, f"RTO {seconds_text(rto)} within the objective {seconds_text(objective)}"
    return Verdict.FAIL, f"RTO {seconds_text(rto)} exceeds the objective {seconds_text(objective)}"


class RecordLike(Protocol):
    """What a report reads of a history record (``workers.ports.HistoryRecord``)."""

    @property
    def run_id(self) -> str: ...
    @property
    def failover(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def source_cluster(self) -> str: ...
    @property
    def target_cluster(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def finished_at(self) -> float: ...
    @property
    def outcome(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def drill(self) -> bool: ...
    @property
    def timeline(self) -> tuple[StepTiming, ...]: ...


@dataclass(frozen=True)
class RunReport:
    run_id: str
    failover: str
    group: str
    mode: str
    source_cluster: str
    target_cluster: str
    drill: bool
    outcome: str
    message: str
    started_at: float
    finished_at: float | None
    steps: tuple[StepTiming, ...]
    objective_seconds: float | None
    origin: str  # "run" (Redis) or "history" (DynamoDB)
    messages: tuple[tuple[str, str], ...] = ()  # step key -> its last message (runs only)

    @property
    def rto_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return round(max(0.0, self.finished_at - self.started_at), 3)

    @property
    def downtime(self) -> tuple[float, float] | None:
        """The downtime window of a successful run (a failed one never had its target serve)."""
        return downtime_window(self.steps) if self.outcome == "SUCCESS" else None

    @property
    def downtime_seconds(self) -> float | None:
        window = self.downtime
        return None if window is None else round(window[1] - window[0], 3)

    @property
    def verdict(self) -> tuple[Verdict, str]:
        return judge(self.outcome, self.rto_seconds, self.objective_seconds, self.message)

    @property
    def waits(self) -> tuple[StepTiming, ...]:
        return tuple(s for s in self.steps if s.type == "wait")

    @property
    def faults(self) -> tuple[StepTiming, ...]:
        """Steps that were retried, met errors or did not end done (skips included)."""
        return tuple(s for s in self.steps if s.errors or s.attempts > 1 or s.outcome not in ("done", ""))

    def lane_of(self, step: StepTiming) -> str:
        if step.side == Side.SOURCE.value:
            return self.source_cluster
        if step.side == Side.TARGET.value:
            return self.target_cluster
        return COORDINATION_LANE

    def lanes(self) -> list[tuple[str, list[StepTiming]]]:
        """The steps per cluster (source, target, then coordination), each in start order."""
        order = [self.source_cluster, self.target_cluster, COORDINATION_LANE]
        grouped: dict[str, list[StepTiming]] = {name: [] for name in order}
        for step in self.steps:
            grouped.setdefault(self.lane_of(step), []).append(step)
        return [(name, steps) for name, steps in grouped.items() if steps]

    def to_dict(self) -> dict[str, Any]:
        verdict, why = self.verdict
        window = self.downtime
        messages = dict(self.messages)
        return {
            "runId": self.run_id,
            "failover": self.failover,
            "group": self.group,
            "mode": self.mode,
            "sourceCluster": self.source_cluster,
            "targetCluster": self.target_cluster,
            "drill": self.drill,
            "outcome": self.outcome,
            "message": self.message,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "rtoSeconds": self.rto_seconds,
            "objectiveSeconds": self.objective_seconds,
            "downtimeSeconds": self.downtime_seconds,
            "downtimeWindow": None if window is None else {"from": window[0], "to": window[1]},
            "verdict": verdict.value,
            "verdictReason": why,
            "origin": self.origin,
            "steps": [
                {
                    "key": s.key,
                    "stage": s.stage,
                    "cluster": self.lane_of(s),
                    "type": s.type,
                    "start": s.start,
                    "end": s.end,
                    "seconds": s.duration,
                    "attempts": s.attempts,
                    "checks": s.checks,
                    "errors": s.errors,
                    "outcome": s.outcome,
                    **({"message": messages[s.key]} if s.key in messages else {}),
                }
                for s in self.steps
            ],
        }


def report_from_run(run: Run, objective: float | None) -> RunReport:
    """The report of ``run`` as Redis holds it (step messages included)."""
    return RunReport(
        run_id=run.run_id,
        failover=run.failover,
        group=str(run.group),
        mode=run.kind.value,
        source_cluster=run.source_cluster,
        target_cluster=run.target_cluster,
        drill=run.drill,
        outcome=run.status.value,
        message=run.failure.describe()
        if run.failure
        else run.message
        if run.status.value != "SUCCESS"
        else "",
        started_at=run.started_at or run.created_at,
        finished_at=run.finished_at,
        steps=timeline_of(run),
        objective_seconds=objective,
        origin="run",
        messages=tuple((key, rec.message) for key, rec in run.steps.items() if rec.message),
    )


def report_from_history(record: RecordLike, objective: float | None) -> RunReport:
    """The report of a run Redis no longer holds, from its history record (no step messages)."""
    return RunReport(
        run_id=record.run_id,
        failover=record.failover,
        group=record.group,
        mode=record.mode,
        source_cluster=record.source_cluster,
        target_cluster=record.target_cluster,
        drill=record.drill,
        outcome=record.outcome,
        message=record.message,
        started_at=record.started_at,
        finished_at=record.finished_at,
        steps=record.timeline,
        objective_seconds=objective,
        origin="history",
    )


@dataclass(frozen=True)
class DrillReport:
    """One drill (a failover, and its failback with ``--back``) or one run's report."""

    title: str
    group: str
    objective_seconds: float | None
    generated_at: float
    runs: tuple[RunReport, ...] = field(default_factory=tuple)

    @property
    def verdict(self) -> Verdict:
        """FAIL if any run fails; NO_OBJECTIVE when no objective is set and every run succeeded."""
        verdicts = [run.verdict[0] for run in self.runs]
        if not verdicts or Verdict.FAIL in verdicts:
            return Verdict.FAIL
        return Verdict.NO_OBJECTIVE if Verdict.NO_OBJECTIVE in verdicts else Verdict.PASS

    @property
    def passed(self) -> bool:
        return self.verdict is not Verdict.FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "group": self.group,
            "objectiveSeconds": self.objective_seconds,
            "generatedAt": self.generated_at,
            "verdict": self.verdict.value,
            "runs": [run.to_dict() for run in self.runs],
        }


def drill_report(
    title: str, group: str, runs: Sequence[RunReport], objective: float | None, now: float
) -> DrillReport:
    return DrillReport(
        title=title, group=group, objective_seconds=objective, generated_at=now, runs=tuple(runs)
    )
