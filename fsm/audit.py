"""Operator controls of a run in flight, as data: what was asked, by whom, why, when, and what became
of it. Kept in the run (``Run.controls``), so the run is its own audit log: the Failover's conditions
and Events, ``failoverctl watch`` and the history record all read it from there.

A control is a *request*: a producer appends it (outcome ``requested``) by compare-and-set; the
engine applies it at a step boundary (outcome ``applied``) or refuses it then (``refused``, with the
reason), see :mod:`fsm.control`. Pure data; no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ControlAction(StrEnum):
    """What an operator can do to a run in flight (``failoverctl run <action>``)."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY_STEP = "retry-step"
    SKIP_STEP = "skip-step"


class ControlOutcome(StrEnum):
    REQUESTED = "requested"
    APPLIED = "applied"
    REFUSED = "refused"


class ControlRecord(BaseModel):
    """One control request and what became of it.

    ``who``: the OS user of ``failoverctl``, or whoever set the Failover's annotation (see README
    "Controlling a run in flight"). ``source``: ``cli`` or ``annotation``. ``step``: the step named by a
    retry or skip, else the step the run was at when it was asked. ``message``: what applying it did,
    or why it was refused.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    action: ControlAction
    who: str
    why: str
    at: float
    step: str | None = None
    force: bool = False
    source: str = "cli"
    outcome: ControlOutcome = ControlOutcome.REQUESTED
    decided_at: float | None = None
    message: str = ""

    @property
    def pending(self) -> bool:
        return self.outcome is ControlOutcome.REQUESTED

    def describe(self) -> str:
        """One line: ``pause by alice (maintenance window) at wait_ready: applied: paused before ...``."""
        step = f" {self.step}" if self.action is ControlAction.SKIP_STEP and self.step else ""
        forced = " --force" if self.force else ""
        where = f" at {self.step}" if self.step and not step else ""
        tail = f": {self.message}" if self.message else ""
        return (
            f"{self.action.value}{step}{forced} by {self.who} ({self.why}){where}: {self.outcome.value}{tail}"
        )
