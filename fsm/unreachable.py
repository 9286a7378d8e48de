"""What a cluster that does not answer means for a run: a pure policy with its reason.

The target (or any cluster other than the source) is retried like any temporary fault. The source is
the site that may be lost:

- without ``force`` a blip is retried briefly (:data:`SOURCE_UNREACHABLE_ATTEMPTS`: a lost site
  should fail fast), then the run fails saying what to do; compensation keeps the full budget, since
  it is putting the source back;
- with ``force`` its steps are skipped, but only once its heartbeat is older than
  ``timeouts.heartbeat``, so that a network blip never skips the stand-down of a live site.

The worker reads the heartbeat only when :func:`needs_heartbeat` says the verdict depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fsm.machine import EventKind
from fsm.plan import Phase
from fsm.run import Run

# Without force, an unreachable source gets this many attempts (a few seconds) before the run fails.
SOURCE_UNREACHABLE_ATTEMPTS = 3


@dataclass(frozen=True)
class Verdict:
    """How the step's outcome is reported: a temporary failure (with a budget or a wait) or a skip."""

    kind: EventKind
    message: str
    max_attempts: int | None = None
    retry_after: float | None = None
    skipped_source: bool = False


def needs_heartbeat(run: Run, cluster: str | None) -> bool:
    """Whether the verdict on ``cluster`` depends on its heartbeat (a forced run's lost source)."""
    return run.force and cluster == run.source_cluster


def judge_unreachable(
    run: Run,
    cluster: str | None,
    error: str,
    *,
    detail: str,
    now: float,
    heartbeat_at: float | None = None,
) -> Verdict:
    """The verdict on a step that could not reach ``cluster``: ``error`` describes the failure in
    full (cluster and object), ``detail`` only what went wrong. Pure."""
    if cluster != run.source_cluster:
        return Verdict(EventKind.TEMPORARY_FAILURE, error)
    if not run.force:
        message = (
            f"source cluster {cluster!r} is unreachable ({detail}); if the site is lost, "
            "submit a new Failover with force: true to skip its steps once its heartbeat is stale"
        )
        budget = None if run.state is Phase.COMPENSATING else SOURCE_UNREACHABLE_ATTEMPTS
        return Verdict(EventKind.TEMPORARY_FAILURE, message, max_attempts=budget)
    age = now - heartbeat_at if heartbeat_at is not None else None
    if age is not None and age < run.heartbeat_timeout:
        message = (
            f"source cluster {cluster!r} is unreachable but its heartbeat is only {age:.0f}s old; "
            f"under force its steps are skipped once it is {run.heartbeat_timeout:g}s old"
        )
        return Verdict(EventKind.TEMPORARY_FAILURE, message, retry_after=run.heartbeat_timeout - age)
    seen = f"last heartbeat {age:.0f}s ago" if age is not None else "no heartbeat on record"
    message = f"skipped under force: source {cluster!r} unreachable, {seen}"
    return Verdict(EventKind.SKIPPED, message, skipped_source=True)
