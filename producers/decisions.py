"""What the watcher does with a Failover object, and the statuses it writes: decisions as data.

Pure: :func:`decide_failover` only reads the object it is given and returns what to do (submit, mark
invalid, note a dry run, skip) with a sentence saying why; the status builders only compute dicts
(``now`` is passed in). The watcher performs the decision and logs its reason once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fsm.models import Failover, excerpt
from fsm.status import conditions as status_conditions

if TYPE_CHECKING:
    from workers.api import PlanReport

Obj = Mapping[str, Any]

TERMINAL = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
REASON_INVALID = "InvalidSpec"
DRY_RUN_MESSAGE = "dry run: nothing was submitted; `failoverctl plan` shows what this Failover would change"


class FailoverAction(StrEnum):
    SUBMIT = "submit"
    INVALID = "invalid"
    DRY_RUN = "dry_run"
    SKIP = "skip"


@dataclass(frozen=True)
class FailoverDecision:
    action: FailoverAction
    reason: str
    failover: Failover | None = None
    field: str | None = None
    message: str = ""


def describe(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return excerpt(f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}", quote=False)


def field_path(loc: Sequence[int | str]) -> str:
    """``("spec", "failoverGroups", 0, "name")`` as ``spec.failoverGroups[0].name``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(object)"


def first_error(error: ValidationError) -> tuple[str, str]:
    """The first invalid field of a pydantic error and what is wrong with it."""
    detail = error.errors(include_url=False)[0]
    loc = [part for part in detail["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    return excerpt(field_path(loc), quote=False), excerpt(str(detail["msg"]), quote=False)


def _recorded_groups(status: Obj) -> set[tuple[str | None, str | None]]:
    return {
        (g.get("namespace"), g.get("name"))
        for g in status.get("failoverGroups") or []
        if isinstance(g, Mapping) and g.get("runId")
    }


def decide_failover(obj: Obj) -> FailoverDecision:
    """What to do with one Failover object as the API server returned it."""
    name = describe(obj)
    status = obj.get("status") or {}
    phase = status.get("status") if isinstance(status, Mapping) else None
    if phase in TERMINAL:
        return FailoverDecision(FailoverAction.SKIP, f"Failover {name} is already {phase}")
    try:
        failover = Failover.model_validate(obj)
    except ValidationError as error:
        field, message = first_error(error)
        return FailoverDecision(
            FailoverAction.INVALID,
            f"Failover {name} is invalid: {field}: {message}",
            field=field,
            message=message,
        )
    if failover.spec.dry_run:
        return FailoverDecision(
            FailoverAction.DRY_RUN, f"Failover {name} is a dry run: not submitted", failover
        )
    if phase == "IN_PROGRESS" and isinstance(status, Mapping):
        recorded = _recorded_groups(status)
        if all(group in recorded for group in failover.group_namespaces()):
            return FailoverDecision(
                FailoverAction.SKIP, f"Failover {name} is IN_PROGRESS with a run for every group", failover
            )
    groups = ", ".join(f"{ns}/{group}" for ns, group in failover.group_namespaces())
    return FailoverDecision(
        FailoverAction.SUBMIT,
        f"Failover {name} is new ({phase or 'no status'}): submit a run for {groups} "
        f"to {failover.spec.target_cluster}",
        failover,
    )


# --- statuses ---------------------------------------------------------------------------------------


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    current: Obj, wanted: Sequence[tuple[str, bool, str, str]], generation: Any, now: float
) -> list[dict[str, Any]]:
    """Conditions ``(type, true, reason, message)`` for ``current`` (``lastTransitionTime`` moves only
    on a flip): the same rule as every status the orchestrator writes (:func:`fsm.status.conditions`)."""
    previous = current.get("status") if isinstance(current.get("status"), Mapping) else {}
    return status_conditions(previous or {}, wanted, generation, now)


def invalid_status(obj: Obj, field: str, message: str, now: float) -> dict[str, Any]:
    """FAILED, with a condition naming the bad field; nothing was enqueued."""
    text = f"invalid: {field}: {message}"
    generation = (obj.get("metadata") or {}).get("generation")
    return {
        "status": "FAILED",
        "message": text,
        "conditions": conditions(obj, [("Ready", False, REASON_INVALID, text)], generation, now),
    }


def dry_run_status(obj: Obj, now: float) -> dict[str, Any]:
    generation = (obj.get("metadata") or {}).get("generation")
    return {
        "status": "PENDING",
        "message": DRY_RUN_MESSAGE,
        "conditions": conditions(obj, [("Ready", False, "DryRun", DRY_RUN_MESSAGE)], generation, now),
    }


def needs_write(current: Obj, desired: Mapping[str, Any], *, ignore: Sequence[str] = ()) -> bool:
    """Whether merging ``desired`` into the object's status would change anything that matters."""
    status = current.get("status") or {}
    return any(status.get(key) != value for key, value in desired.items() if key not in ignore)


def dry_run_plan_status(obj: Obj, reports: Sequence[PlanReport], now: float) -> dict[str, Any]:
    """The status of a planned dry run: the plan per cluster, skipped steps, a ``DryRun`` condition."""
    problems = [str(p) for r in reports for p in r.problems]
    summary = "; ".join(r.summary() for r in reports)
    generation = (obj.get("metadata") or {}).get("generation")
    if problems:
        message = f"{DRY_RUN_MESSAGE}; the plan found problems: {'; '.join(problems)}"
        wanted = [("DryRun", False, "PlanHasProblems", message)]
    else:
        message = f"dry run: nothing was changed or submitted; plan: {summary}"
        wanted = [("DryRun", True, "Planned", message)]
    return {
        "status": "PENDING" if problems else "SUCCESS",
        "message": message,
        "plan": [entry for r in reports for entry in r.status_plan()],
        "skippedSteps": [
            {"group": r.group, "step": s.step.value, "reason": s.skip_reason}
            for r in reports
            for s in r.skipped
        ],
        "conditions": conditions(obj, wanted, generation, now),
    }
