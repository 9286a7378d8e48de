"""The predicted RTO of a group: how long its failovers took, per mode, from its own history.

Pure. From the group's history records (successful CONSISTENCY and UPTIME runs, drills included: they
are real failovers), per mode: the total duration (start to completion) and each stage's duration
(:func:`fsm.timeline.stage_durations` of the record's timeline), as p50 and p95, and whether the p95
meets the group's ``spec.objectives.rto``. A mode without a successful run has "no history".

Quantiles are nearest-rank: the p-th percentile of n sorted values is the value at rank
``ceil(p / 100 * n)`` (1-based), always one of the durations measured, never an interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from fsm.models import FailoverGroup, FailoverMode, format_duration
from fsm.timeline import StepTiming, stage_durations

MODES = tuple(mode.value for mode in FailoverMode)
# How many of a group's newest history records a forecast reads (each holds a timeline of a few KB).
HISTORY_DEPTH = 20


class HistoryLike(Protocol):
    """What the forecast reads of a history record (``workers.ports.HistoryRecord``)."""

    @property
    def mode(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def finished_at(self) -> float: ...
    @property
    def timeline(self) -> tuple[StepTiming, ...]: ...


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank ``p``-th percentile (0 < p <= 100) of non-empty ``values``."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Quantiles:
    p50: float
    p95: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Quantiles:
        return cls(p50=round(percentile(values, 50), 3), p95=round(percentile(values, 95), 3))

    def to_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p95": self.p95}


def seconds_text(value: float) -> str:
    """``75.5`` as ``1m15.5s`` (0 as ``0s``)."""
    return format_duration(timedelta(seconds=max(0.0, value)))


@dataclass(frozen=True)
class ModeForecast:
    """One mode's forecast: ``total`` None when the group has no successful run of this mode."""

    mode: str
    runs: int
    total: Quantiles | None
    stages: tuple[tuple[str, Quantiles], ...] = ()
    objective: float | None = None

    @property
    def meets_objective(self) -> bool | None:
        """Whether the p95 total is within the objective (None: no history or no objective)."""
        if self.total is None or self.objective is None:
            return None
        return self.total.p95 <= self.objective

    def summary(self) -> str:
        if self.total is None:
            return f"{self.mode}: no history"
        text = (
            f"{self.mode}: p50 {seconds_text(self.total.p50)}, p95 {seconds_text(self.total.p95)} "
            f"over {self.runs} run{'s' if self.runs != 1 else ''}"
        )
        if self.objective is not None:
            met = "met" if self.meets_objective else "NOT met"
            text += f"; objective {seconds_text(self.objective)} {met} at p95"
        return text

    def to_dict(self) -> dict[str, Any]:
        """As ``status.forecast.modes[]``: no null values (a merge patch would drop them, and the
        status would then differ from what is written on every pass)."""
        data: dict[str, Any] = {
            "mode": self.mode,
            "runs": self.runs,
            "stages": {stage: q.to_dict() for stage, q in self.stages},
            "summary": self.summary(),
        }
        if self.total is not None:
            data["totalSeconds"] = self.total.to_dict()
        if self.meets_objective is not None:
            data["meetsObjective"] = self.meets_objective
        return data


@dataclass(frozen=True)
class Forecast:
    objective: float | None
    modes: tuple[ModeForecast, ...]

    def mode(self, mode: str) -> ModeForecast:
        return next(m for m in self.modes if m.mode == mode)

    def to_dict(self) -> dict[str, Any]:
        """The FailoverGroup's ``status.forecast`` (``objectiveSeconds`` only when the group sets one)."""
        data: dict[str, Any] = {"modes": [m.to_dict() for m in self.modes]}
        if self.objective is not None:
            data["objectiveSeconds"] = self.objective
        return data


def forecast_mode(history: Sequence[HistoryLike], mode: str, objective: float | None) -> ModeForecast:
    runs = [r for r in history if r.mode == mode and r.outcome == "SUCCESS" and r.finished_at >= r.started_at]
    if not runs:
        return ModeForecast(mode=mode, runs=0, total=None, objective=objective)
    per_stage: dict[str, list[float]] = {}
    for record in runs:
        for stage, seconds in stage_durations(record.timeline).items():
            per_stage.setdefault(stage, []).append(seconds)
    return ModeForecast(
        mode=mode,
        runs=len(runs),
        total=Quantiles.of([r.finished_at - r.started_at for r in runs]),
        stages=tuple((stage, Quantiles.of(values)) for stage, values in per_stage.items()),
        objective=objective,
    )


def forecast(
    history: Sequence[HistoryLike], objective: float | None, modes: Sequence[str] = MODES
) -> Forecast:
    """The forecast of every mode in ``modes`` from ``history`` against ``objective`` (seconds)."""
    return Forecast(objective=objective, modes=tuple(forecast_mode(history, m, objective) for m in modes))


def objective_of(group: FailoverGroup) -> float | None:
    """The group's ``spec.objectives.rto`` in seconds (None when unset)."""
    rto = group.spec.objectives.rto
    return rto.total_seconds() if rto is not None else None


def group_forecast(group: FailoverGroup, history: Sequence[HistoryLike]) -> Forecast:
    """The forecast of ``group`` (both modes) from its history, against its own objective."""
    return forecast(history, objective_of(group))
