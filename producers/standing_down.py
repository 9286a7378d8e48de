"""The health checker's stand-downs: a returning site that still holds active objects of a group it no
longer owns is made passive, but only once the owner is verified to serve; when the owner answers and
does not serve, the group is recorded as diverged instead (never zero serving). A mixin of
:class:`producers.health.HealthChecker`; the decisions are :func:`fsm.health.decide_stand_down`'s.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from fsm.health import GroupHealth, StandDownDecision, active_objects, decide_stand_down
from fsm.models import FailoverGroup, GroupKey, ResourceRef
from producers.kube import Obj
from workers.api import Orchestrator, RequestError
from workers.ports import Divergence, LockInfo

log = structlog.get_logger("producers.health")


class StandingDown:
    """The part of the health checker that stands returning sites down (its state is the checker's)."""

    orchestrator: Orchestrator
    _last_stand_down: dict[tuple[GroupKey, str], str]

    def _stand_down(
        self,
        key: GroupKey,
        group: FailoverGroup,
        active: str | None,
        read: Mapping[str, Mapping[ResourceRef, Obj | None]],
        lock: LockInfo | None,
        *,
        owner_health: GroupHealth | None,
        diverged: str | None,
        now: float,
        read_in: str,
    ) -> tuple[tuple[StandDownDecision, ...], tuple[str, ...]]:
        """Stand down every answering cluster but the owner that still holds active objects, once the
        owner is verified to serve; record the group as diverged when it answers and does not.
        ``read_in``: the group's history epoch read before ``read`` (see ``Orchestrator.stand_down``)."""
        decisions = tuple(
            decide_stand_down(
                group=str(key),
                cluster=name,
                owner=active,
                active=active_objects(group, objects),
                lock_holder=lock.run_id if lock is not None else None,
                owner_health=owner_health,
                diverged=diverged,
            )
            for name, objects in sorted(read.items())
            if name != active
        )
        for decision in decisions:
            if decision.diverged:
                self.orchestrator.coordination.mark_diverged(
                    key, Divergence(reason=decision.reason, at=now, detail=self._evidence(group, read))
                )
                log.warning(
                    "group_diverged", group=str(key), cluster=decision.cluster, reason=decision.reason
                )
                break
        started = [
            run_id
            for decision in decisions
            if (run_id := self._start_stand_down(key, group, decision, read_in))
        ]
        return decisions, tuple(started)

    def _start_stand_down(
        self, key: GroupKey, group: FailoverGroup, decision: StandDownDecision, read_in: str
    ) -> str | None:
        """Log the decision when it changed; start the stand-down it asks for. The new run's id."""
        if self._last_stand_down.get((key, decision.cluster)) != decision.reason:
            self._last_stand_down[(key, decision.cluster)] = decision.reason
            log.info(
                "stand_down_decision",
                group=str(key),
                cluster=decision.cluster,
                stand_down=decision.stand_down,
                reason=decision.reason,
            )
        if not decision.stand_down:
            return None
        try:
            submission = self.orchestrator.stand_down(
                group, decision.cluster, reason=decision.reason, read_in=read_in
            )
        except RequestError as error:  # the owner flipped, or a run finished, since it was read
            log.info("stand_down_refused", group=str(key), cluster=decision.cluster, error=str(error))
            return None
        if not submission.created:
            return None
        log.warning(
            "stand_down_started",
            group=str(key),
            cluster=decision.cluster,
            run_id=submission.run.run_id,
            reason=decision.reason,
        )
        return submission.run.run_id

    @staticmethod
    def _evidence(group: FailoverGroup, read: Mapping[str, Mapping[ResourceRef, Obj | None]]) -> str:
        """Per cluster, which of the group's objects are active: what an operator settles on."""
        return "; ".join(
            f"{name}: {', '.join(active_objects(group, objects)) or 'nothing active'}"
            for name, objects in sorted(read.items())
        )
