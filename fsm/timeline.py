"""A run's steps as a timeline: when each step ran, on which side, in which stage, with what retries.

Pure. The timeline is what a report draws (a Gantt chart per cluster), what the forecast sums per
stage, and what history keeps of a finished run (:func:`encode`, bounded to :data:`MAX_ENTRIES`
entries, so that a DynamoDB item stays small whatever the run went through). Times are seconds from
the run's start.

The downtime window is derived from the steps' catalogue entries (:data:`fsm.plan.CATALOGUE`): the
source stops serving when the first step that moves its workloads or network to PASSIVE starts; the
target serves when the last step that moves (or waits for) its workloads or network ACTIVE ends. In
UPTIME mode the target serves before the source stops, so the window is empty.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from fsm.kinds import Role
from fsm.plan import CATALOGUE, Objects, Side, Stage, Step, StepInfo
from fsm.run import Run

# At most this many steps are kept of one run (a plan has about 20; compensation adds a few).
MAX_ENTRIES = 64
# Encoded, one entry is under 120 bytes: a timeline stays under 8 KB in a history item.
_SERVING = frozenset({Objects.WORKLOADS, Objects.NETWORK})


@dataclass(frozen=True)
class StepTiming:
    """One step (or undo action) of a run: ``start``/``end`` in seconds from the run's start."""

    key: str
    step: str
    stage: str
    side: str
    start: float
    end: float | None
    attempts: int = 0
    checks: int = 0
    errors: int = 0
    outcome: str = ""

    @property
    def duration(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)

    @property
    def type(self) -> str:
        """``effect``, ``wait`` or ``coordination`` (the catalogue's type of the step)."""
        info = _info(self.step)
        return info.type.value if info is not None else "coordination"


def _info(step: str) -> StepInfo | None:
    try:
        return CATALOGUE.get(Step(step))
    except ValueError:
        return None


def _place(run: Run, key: str) -> tuple[str, str, str]:
    """``(step, stage, side)`` of a step record's key (``STEP`` or ``undo:i:STEP``)."""
    if key.startswith("undo:"):
        step = key.rsplit(":", 1)[-1]
        index = key.split(":")[1]
        action = (
            run.compensation[int(index)] if index.isdigit() and int(index) < len(run.compensation) else None
        )
        side = Side.COORDINATION.value
        if action is not None and action.cluster == run.source_cluster:
            side = Side.SOURCE.value
        elif action is not None and action.cluster == run.target_cluster:
            side = Side.TARGET.value
        return step, Stage.COMPENSATION.value, side
    try:
        planned = run.planned(Step(key))
    except ValueError:
        planned = None
    if planned is None:
        return key, Stage.COMPLETION.value, Side.COORDINATION.value
    return key, planned.stage.value, planned.side.value


def timeline_of(run: Run) -> tuple[StepTiming, ...]:
    """The run's step records as a timeline, in the order they started (at most MAX_ENTRIES)."""
    origin = run.started_at or run.created_at
    entries = []
    for key, record in run.steps.items():
        if record.started_at is None:
            continue
        step, stage, side = _place(run, key)
        entries.append(
            StepTiming(
                key=key,
                step=step,
                stage=stage,
                side=side,
                start=round(record.started_at - origin, 3),
                end=None if record.finished_at is None else round(record.finished_at - origin, 3),
                attempts=record.attempts,
                checks=record.checks,
                errors=record.errors,
                outcome=record.outcome or "",
            )
        )
    entries.sort(key=lambda e: (e.start, e.key))
    return tuple(entries[:MAX_ENTRIES])


def stage_durations(timeline: Sequence[StepTiming]) -> dict[str, float]:
    """Seconds each stage took: from its first step's start to its last step's end (finished steps)."""
    spans: dict[str, tuple[float, float]] = {}
    for entry in timeline:
        if entry.end is None:
            continue
        low, high = spans.get(entry.stage, (entry.start, entry.end))
        spans[entry.stage] = (min(low, entry.start), max(high, entry.end))
    return {stage: round(high - low, 3) for stage, (low, high) in spans.items()}


def _moves_serving(entry: StepTiming, side: Side, role: Role) -> bool:
    info = _info(entry.step)
    return (
        info is not None
        and entry.side == side.value
        and entry.stage != Stage.COMPENSATION.value
        and entry.outcome == "done"
        and info.role is role
        and bool(_SERVING.intersection(info.objects))
    )


def downtime_window(timeline: Sequence[StepTiming]) -> tuple[float, float] | None:
    """``(source stopped serving, target serves)`` of a successful run's timeline, in seconds from
    the run's start (a failed run's target never served: :attr:`fsm.report.RunReport.downtime`). An
    empty window (both equal) when the target served first; None when either end is missing (a group
    with neither workloads nor network)."""
    stops = [e.start for e in timeline if _moves_serving(e, Side.SOURCE, Role.PASSIVE)]
    serves = [e.end for e in timeline if e.end is not None and _moves_serving(e, Side.TARGET, Role.ACTIVE)]
    if not stops or not serves:
        return None
    stopped, served = min(stops), max(serves)
    return stopped, max(stopped, served)


# --- history's copy ----------------------------------------------------------------------------------


def encode(timeline: Sequence[StepTiming]) -> str:
    """Compact JSON of at most MAX_ENTRIES entries (what a history record stores)."""
    rows = [
        [e.key, e.stage, e.side, e.start, e.end, e.attempts, e.checks, e.errors, e.outcome]
        for e in timeline[:MAX_ENTRIES]
    ]
    return json.dumps(rows, separators=(",", ":"))


def decode(text: str) -> tuple[StepTiming, ...]:
    """The timeline :func:`encode` wrote; an unreadable one is empty (old records have none)."""
    try:
        rows = json.loads(text) if text else []
        return tuple(
            StepTiming(
                key=str(key),
                step=str(key).rsplit(":", 1)[-1],
                stage=str(stage),
                side=str(side),
                start=float(start),
                end=None if end is None else float(end),
                attempts=int(attempts),
                checks=int(checks),
                errors=int(errors),
                outcome=str(outcome),
            )
            for key, stage, side, start, end, attempts, checks, errors, outcome in rows[:MAX_ENTRIES]
        )
    except (ValueError, TypeError):
        return ()
