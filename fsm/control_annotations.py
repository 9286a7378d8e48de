"""Controls asked through annotations on the Failover (kubectl, GitOps), as requests. Pure.

``failover.hahomelabs.com/pause: "true"`` pauses the Failover's runs, and ``"false"`` or removing it
resumes them; ``failover.hahomelabs.com/cancel: "<reason or true>"`` cancels them;
``failover.hahomelabs.com/skip-step: "<step>"`` skips that wait step (with
``failover.hahomelabs.com/force: "true"`` for a wait that guards volumes). Who asked:
``failover.hahomelabs.com/requested-by``, else the field manager that last set the annotation
(``metadata.managedFields``), else ``annotation``; why: ``failover.hahomelabs.com/reason``, else the
cancel value, else ``set by annotation``.

Annotations are level-triggered but nothing is applied twice: each request is recorded in the run
with ``source: annotation`` (refusals too), and :func:`wanted_controls` asks only for what the run's
annotation records do not already say. The pause annotation follows its own last record (a pause
asked by annotation is resumed by removing it; a pause or resume by the CLI is left alone); a cancel is
asked once per run; a skip once per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsm.audit import ControlAction
from fsm.plan import Step
from fsm.run import Run

PREFIX = "failover.hahomelabs.com/"
PAUSE = f"{PREFIX}pause"
CANCEL = f"{PREFIX}cancel"
SKIP_STEP = f"{PREFIX}skip-step"
FORCE = f"{PREFIX}force"
REQUESTED_BY = f"{PREFIX}requested-by"
REASON = f"{PREFIX}reason"
CONTROLS = (PAUSE, CANCEL, SKIP_STEP)
SOURCE = "annotation"


@dataclass(frozen=True)
class Wanted:
    """One control an annotation asks for; ``step`` None with ``unknown`` set: a skip of no such step."""

    action: ControlAction
    why: str
    step: Step | None = None
    force: bool = False
    unknown: str | None = None


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "false", "0", "no")


def wanted_controls(annotations: Mapping[str, str], run: Run) -> list[Wanted]:
    """What the annotations ask of ``run`` that its annotation records do not already show."""
    if run.terminal:
        return []
    mine = [c for c in run.controls if c.source == SOURCE]
    reason = (annotations.get(REASON) or "").strip()
    wanted = []
    toggles = [c for c in mine if c.action in (ControlAction.PAUSE, ControlAction.RESUME)]
    paused_by_us = bool(toggles) and toggles[-1].action is ControlAction.PAUSE
    if _true(annotations.get(PAUSE)) and not paused_by_us:
        wanted.append(Wanted(ControlAction.PAUSE, reason or f"{PAUSE}=true"))
    elif not _true(annotations.get(PAUSE)) and paused_by_us:
        wanted.append(Wanted(ControlAction.RESUME, reason or f"{PAUSE} removed or false"))
    cancel = (annotations.get(CANCEL) or "").strip()
    if _true(cancel) and not any(c.action is ControlAction.CANCEL for c in mine):
        why = reason or (cancel if cancel.lower() != "true" else f"{CANCEL}=true")
        wanted.append(Wanted(ControlAction.CANCEL, why))
    skip = (annotations.get(SKIP_STEP) or "").strip()
    if skip and not any(c.action is ControlAction.SKIP_STEP and c.step == skip for c in mine):
        force = _true(annotations.get(FORCE))
        why = reason or f"{SKIP_STEP}={skip}"
        try:
            wanted.append(Wanted(ControlAction.SKIP_STEP, why, step=Step(skip), force=force))
        except ValueError:
            wanted.append(Wanted(ControlAction.SKIP_STEP, why, force=force, unknown=skip))
    return wanted


def requested_by(obj: Mapping[str, Any]) -> str:
    """Who set the control annotations: ``requested-by``, else the newest field manager that owns one
    of them (``managedFields``), else ``annotation``."""
    meta = obj.get("metadata") or {}
    named = ((meta.get("annotations") or {}).get(REQUESTED_BY) or "").strip()
    if named:
        return named
    owners = []
    for entry in meta.get("managedFields") or []:
        if not isinstance(entry, Mapping):
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if any(f"f:{key}" in fields for key in CONTROLS):
            owners.append((str(entry.get("time") or ""), str(entry.get("manager") or "")))
    if owners:
        return f"{max(owners)[1]} (field manager)"
    return SOURCE
