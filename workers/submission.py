"""Submitting a run: store it once, then send its start message. The one path every submitter takes.

The engine, a producer's failover and a health checker's stand-down all submit this way, so the
order is the same everywhere: the run exists in Redis before its message can reach a worker, and a
run id that exists already (a watcher that restarted, the same Failover seen on both clusters) sends
nothing. A run Redis lost is restored from its journal the same way (:func:`restore_run`).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from fsm.models import GroupKey
from fsm.run import Run
from workers.admission import Admission
from workers.messages import START_TASK, Sender
from workers.ports import Coordination
from workers.store import Queued, RunStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Submission:
    """The run as stored (the existing one when ``created`` is False) and whether this call made it."""

    run: Run
    created: bool


def submit_run(
    store: RunStore,
    sender: Sender,
    run: Run,
    *,
    admission: Admission | None = None,
    queued: Queued | None = None,
) -> Submission:
    """Store ``run`` as new and send its start message; the stored run if its id exists already.

    With ``admission`` and ``queued`` the run is queued for admission instead (:mod:`workers.admission`)
    and started as soon as the site has room, which may be at once."""
    if not store.create(run, queued=queued if admission is not None else None):
        return Submission(run=store.load(run.run_id) or run, created=False)
    if admission is not None and queued is not None:
        admission.admit(sender)
    else:
        sender.send(START_TASK, run.run_id, 0, countdown=0.0, cluster=None)
    log.info(
        "run.submitted",
        run_id=run.run_id,
        failover=run.failover,
        group=str(run.group),
        kind=run.kind.value,
        source=run.source_cluster,
        target=run.target_cluster,
        queued=queued.flow if queued is not None and admission is not None else None,
    )
    return Submission(run=run, created=True)


@dataclass(frozen=True)
class Restored:
    """A run read back from its journal: as stored, whether this call created it in Redis (False: Redis
    had it already), and the journal entry it came from."""

    run: Run
    created: bool
    sequence: int


def restore_run(store: RunStore, coordination: Coordination, group: GroupKey, run_id: str) -> Restored | None:
    """Recreate a run that Redis lost from its newest journal entry (nothing is sent); None when the
    journal has no entry for it. The caller sends its message (the engine as a redrive)."""
    entries = coordination.journal(group, run_id)
    if not entries:
        return None
    newest = entries[-1]
    run = Run.model_validate_json(newest.run_json)
    created = store.create(run)
    stored = store.load(run_id) or run
    if created:
        log.warning("run.rebuilt", run_id=run_id, state=stored.state_name, sequence=newest.sequence)
    return Restored(run=stored, created=created, sequence=newest.sequence)
