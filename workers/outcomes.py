"""What a step's exception means for its run: the :class:`fsm.decide.Event` the engine reports.

Our errors say whether to retry (:class:`TemporaryError`), stop (:class:`PermanentError`; a fenced
write or a lost lease says the run no longer owns its group, so nothing is undone) or judge an
unreachable cluster (:mod:`fsm.unreachable`); anything else is a bug or an unexpected fault, retried
within the step's budget (effects are idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from fsm.decide import Event, EventKind
from fsm.run import Run, Superseded
from fsm.unreachable import judge_unreachable, needs_heartbeat
from workers.errors import (
    ClusterUnreachable,
    Fenced,
    LeaseLost,
    OrchestratorError,
    PermanentError,
    TemporaryError,
)
from workers.ports import Coordination

log = structlog.get_logger(__name__)


def _superseded(error: PermanentError) -> Superseded | None:
    """Whether the error says the run no longer owns its group (so that nothing is undone)."""
    if isinstance(error, Fenced):
        return Superseded.FENCED
    if isinstance(error, LeaseLost):
        return Superseded.LEASE_LOST
    return None


def failed_event(
    run: Run,
    error: Exception,
    now: float,
    base: dict[str, Any],
    *,
    jitter: Callable[[], float],
    coordination: Coordination,
) -> Event:
    """The event for a step that raised: our errors say whether to retry; anything else is a bug
    or an unexpected fault, retried within the step's budget (effects are idempotent)."""
    cluster = run.current_cluster
    where = {"run_id": run.run_id, "step": base["step"].value, "cluster": cluster}
    if isinstance(error, ClusterUnreachable):
        return _unreachable(run, error, now, base, jitter=jitter, coordination=coordination)
    if isinstance(error, TemporaryError):
        log.warning("step.temporary_failure", **where, error=error.describe(), retry_after=error.retry_after)
        return Event(
            kind=EventKind.TEMPORARY_FAILURE,
            message=error.describe(),
            cluster=error.cluster,
            obj=error.obj,
            retry_after=error.retry_after,
            jitter=jitter(),
            **base,
        )
    if isinstance(error, PermanentError):
        log.error("step.failed", **where, error=error.describe())
        return Event(
            kind=EventKind.PERMANENT_FAILURE,
            message=error.describe(),
            cluster=error.cluster or cluster,
            obj=error.obj,
            superseded=_superseded(error),
            **base,
        )
    if isinstance(error, OrchestratorError):
        return Event(kind=EventKind.PERMANENT_FAILURE, message=error.describe(), cluster=cluster, **base)
    log.error("step.unexpected_error", **where, exc_info=error)
    message = f"{type(error).__name__}: {error}"
    return Event(kind=EventKind.TEMPORARY_FAILURE, message=message, cluster=cluster, jitter=jitter(), **base)


def _unreachable(
    run: Run,
    error: ClusterUnreachable,
    now: float,
    base: dict[str, Any],
    *,
    jitter: Callable[[], float],
    coordination: Coordination,
) -> Event:
    """A cluster that does not answer: :func:`fsm.unreachable.judge_unreachable` decides; this only
    reads the heartbeat it needs and logs what it decided."""
    cluster = error.cluster or run.current_cluster
    heartbeat_at = None
    if needs_heartbeat(run, cluster):
        beats = {beat.cluster: beat.at for beat in coordination.heartbeats(run.group)}
        heartbeat_at = beats.get(cluster) if cluster else None
    verdict = judge_unreachable(
        run, cluster, error.describe(), detail=error.message, now=now, heartbeat_at=heartbeat_at
    )
    where = {"run_id": run.run_id, "step": base["step"].value, "cluster": cluster}
    if verdict.skipped_source:
        log.warning("step.skipped_lost_source", **where, reason=verdict.message)
    elif cluster == run.source_cluster and not run.force:
        log.error("step.source_unreachable", **where, reason=verdict.message)
    return Event(
        kind=verdict.kind,
        message=verdict.message,
        cluster=cluster,
        retry_after=verdict.retry_after,
        max_attempts=verdict.max_attempts,
        jitter=jitter(),
        **base,
    )
