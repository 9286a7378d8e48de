"""Moves a run through ``fsm.decide`` the way the engine would, at a controlled clock (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fsm.decide import Decision, Event, EventKind, decide
from fsm.models import Failover, FailoverGroup
from fsm.plan import Step
from fsm.run import Run, new_run
from tests.factories import group as shop_group
from workers.api import run_id_for

T0 = 1_900_000_000.0


class RunDriver:
    """One run of ``failover`` for ``group``, its id the one the watcher would give it.

    ``on_commit`` is told every new version of the run (e.g. to put it in a run store).
    """

    def __init__(
        self,
        failover: Failover,
        group: FailoverGroup | None = None,
        *,
        now: float = T0,
        on_commit: Callable[[Run], None] | None = None,
    ) -> None:
        g = group or shop_group()
        self.now = now
        self.on_commit = on_commit
        self.run = new_run(
            run_id=run_id_for(failover, g), failover=failover, group=g, source_cluster="site-a", now=now
        )
        self._commit(self.run)

    def _commit(self, run: Run) -> Run:
        self.run = run
        if self.on_commit is not None:
            self.on_commit(run)
        return run

    def apply(self, decision: Decision) -> Run:
        assert decision.changed, decision.reason
        return self._commit(decision.run)

    def start(self) -> Run:
        return self.apply(decide(self.run, Event(kind=EventKind.START), self.now))

    def step(self, kind: EventKind = EventKind.SUCCEEDED, message: str = "", **fields: Any) -> Run:
        assert self.run.dispatch is not None
        started = self.now
        self.now += 1.0
        event = Event(
            kind=kind,
            step=self.run.dispatch.step,
            ticket=self.run.dispatch.ticket,
            started_at=started,
            message=message,
            **fields,
        )
        return self.apply(decide(self.run, event, self.now))

    def until(self, step: Step) -> Run:
        """Succeed every step until the run waits for ``step``."""
        while self.run.dispatch is not None and self.run.dispatch.step is not step:
            self.step()
        return self.run

    def finish(self) -> Run:
        while not self.run.terminal:
            self.step(message="ok")
        return self.run
