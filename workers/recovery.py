"""Which due runs the sweep sends again: Temporal's three activity timeouts on our messages.

A run in flight is in the store's sorted set of due times. The sweep reads only the runs due by now
(O(overdue): the ones whose message should have started, which includes those executing right now,
never a scan of all runs), with the claim each executing step leaves (run, ticket, resend count,
worker) and the live workers (a heartbeat key with a TTL per worker, with its queues and how long it
has had a free slot). For each it decides, without I/O, whether to send the message again:

- **heartbeat**: the step was claimed, but the claiming worker's heartbeat expired (SIGKILL, OOM,
  a lost node): sent again at once;
- **start-to-close**: the step's live worker has run it longer than ``start_to_close``: sent again;
- **schedule-to-start**: nobody claimed the message ``schedule_to_start`` after it was due, although a
  live worker consuming its queue had a free slot for a whole heartbeat interval (so the message is
  not waiting in the queue behind busy workers: it is lost, or held by a dead worker as a countdown).
  The wait doubles with each resend of the same message, up to ``redrive_after``;
- **lost sender**: unclaimed, and the worker that committed the dispatch (and so sends its message,
  ``Dispatch.sender``) stopped heartbeating: it may have died between its commit and its send, so
  the message is sent again at once rather than when the site next goes idle (a copy that was sent
  after all is a harmless duplicate). Only a message sent after its commit names a sender: one that
  the commit pushed itself (:mod:`workers.outbox`) cannot be lost that way;
- **backstop**: unclaimed ``redrive_after`` after it was due while no live worker says it consumes
  the queue (workers without the heartbeat thread, or none at all: nothing tells a queued message
  from a lost one, so it is sent again, at most every ``redrive_after``).

"Overdue" therefore means due and not claimed by a live worker, never merely queued: a message
queued behind busy workers is not sent again however long the queue (a worker that received a
message within the interval is not free: the queue is moving), and a lost one is sent again as soon
as a worker of its queue is idle. ``MAX_REDRIVES`` (``fsm.decide``) keeps its meaning of "resent
that many times and no worker acted on it". Duplicates stay harmless: a message carries the run's
ticket, and only the one the run waits for does anything. Admission (:mod:`workers.admission`) keeps
the queue short, so that a queued message is also never late for its run's deadlines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fsm.run import Run


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker's heartbeat says: the queues it consumes and for how long it has had a free slot
    and received no message (0 while every slot is busy, or when a message came in: the queue moves)."""

    queues: tuple[str, ...]
    slots: int = 1
    busy: int = 0
    free_for: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {"queues": list(self.queues), "slots": self.slots, "busy": self.busy, "free_for": self.free_for}
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerInfo:
        data = json.loads(raw)
        return cls(
            queues=tuple(data.get("queues", ())),
            slots=int(data.get("slots", 1)),
            busy=int(data.get("busy", 0)),
            free_for=float(data.get("free_for", 0.0)),
        )


@dataclass(frozen=True)
class Claim:
    """A worker started the step the run waits for: ``ticket`` and ``attempt`` (the message's resend
    count) say which delivery, ``at`` when (the worker's clock)."""

    ticket: int
    attempt: int
    worker: str
    at: float


@dataclass(frozen=True)
class Timeouts:
    heartbeat_interval: float
    schedule_to_start: float
    start_to_close: float
    redrive_after: float


def claim_holds(run: Run, claim: Claim | None) -> bool:
    """Whether ``claim`` is for the delivery the run waits for now (not an earlier one)."""
    dispatch = run.dispatch
    if claim is None or dispatch is None:
        return False
    return claim.ticket == dispatch.ticket and claim.attempt == dispatch.redriven


def resend_reason(
    run: Run,
    *,
    due_at: float,
    queue: str,
    claim: Claim | None,
    workers: dict[str, WorkerInfo],
    now: float,
    timeouts: Timeouts,
) -> str | None:
    """Why the run's message must be sent again now, or None to leave it be."""
    if run.terminal:
        return None
    if claim_holds(run, claim):
        assert claim is not None
        if claim.worker not in workers:
            return f"its worker {claim.worker} stopped heartbeating (heartbeat timeout)"
        running = now - claim.at
        if running > timeouts.start_to_close:
            return (
                f"worker {claim.worker} has run it for {running:.0f}s, "
                f"over start_to_close {timeouts.start_to_close:g}s"
            )
        return None
    late = now - due_at
    sender = run.dispatch.sender if run.dispatch else None
    if sender is not None and sender not in workers and late >= 0:
        return f"the worker {sender} that committed it stopped heartbeating before any worker took it"
    if late >= timeouts.redrive_after and not any(queue in info.queues for info in workers.values()):
        return f"not started {late:.1f}s after it was due, and no live worker says it consumes {queue}"
    redriven = run.dispatch.redriven if run.dispatch else 0
    wait = min(timeouts.schedule_to_start * 2**redriven, timeouts.redrive_after)
    if late < wait:
        return None
    for name, info in sorted(workers.items()):
        if queue in info.queues and info.busy < info.slots and info.free_for >= timeouts.heartbeat_interval:
            return (
                f"not started {late:.1f}s after it was due while worker {name} had a free slot on "
                f"{queue} (schedule-to-start {wait:g}s)"
            )
    return None
