"""The narrow API producers use: submit a failover, read runs, reach the coordination store.

Producers (``failoverctl``, the watcher, the health checker) submit events and read state; they never
run steps. This module is all of ``workers`` they may import besides the settings (an import-linter
contract holds that), so the engine's internals can change without touching them.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass

from celery import Celery

from fsm.models import Failover, FailoverGroup, GroupKey, RequestError, check_request
from fsm.run import Run, new_run, new_standdown_run
from workers import liveness
from workers.app import create_app
from workers.container import dynamo_coordination
from workers.engine import START_TASK
from workers.errors import PermanentError
from workers.kube import KubeClients, KubeEffects
from workers.logging import configure_logging
from workers.metrics import set_heartbeat_age, start_metrics_server
from workers.planning import PlanReport, Problem, StepPlan, plan_failover, validate_group
from workers.ports import Change, Coordination, HistoryRecord, LockInfo
from workers.settings import Settings
from workers.store import RunStore
from workers.tasks import CelerySender

__all__ = [
    "Change",
    "Coordination",
    "HistoryRecord",
    "LockInfo",
    "Orchestrator",
    "PlanReport",
    "Problem",
    "RequestError",
    "StepPlan",
    "Submission",
    "configure_logging",
    "liveness",
    "run_id_for",
    "set_heartbeat_age",
    "start_metrics_server",
]


# A stand-down that failed is tried again, but not before this many seconds (the checker runs often).
STANDDOWN_RETRY_AFTER = 300.0


def run_id_for(failover: Failover, group: FailoverGroup) -> str:
    """One run per Failover (namespace, name, spec) and group, wherever and however often it is seen.

    GitOps may apply the same Failover to both clusters, and a restarted watcher sees it again: both
    must lead to the same run. A changed mind is a new Failover (spec fields are immutable), so a new
    name or spec gives a new id.
    """
    spec = failover.spec.model_dump_json(by_alias=True)
    key = (
        f"{failover.metadata.namespace}/{failover.metadata.name}|{group.metadata.namespace}/"
        f"{group.metadata.name}|{spec}"
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Submission:
    run: Run
    created: bool


class Orchestrator:
    """A producer's handle on one site's stack: its Redis, its broker and the DynamoDB table."""

    def __init__(self, settings: Settings, *, coordination: Coordination | None = None) -> None:
        self.settings = settings
        self.coordination = coordination or dynamo_coordination(settings)
        self.store = RunStore.from_url(settings.redis_url, prefix=settings.key_prefix, ttl=settings.run_ttl)
        self._celery: Celery | None = None
        self._celery_lock = threading.Lock()
        self._effects: KubeEffects | None = None

    def close(self) -> None:
        self.store.close()
        with self._celery_lock:
            effects, self._effects = self._effects, None
        if effects is not None:
            effects.close()
        if self._celery is not None:
            self._celery.close()
        close = getattr(self.coordination, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def celery(self) -> Celery:
        with self._celery_lock:
            if self._celery is None:
                self._celery = create_app(self.settings)
            return self._celery

    def submit(
        self, failover: Failover, group: FailoverGroup, *, failover_cluster: str | None = None
    ) -> Submission:
        """Create the run of ``failover`` for ``group`` (once) and send its start message.

        ``failover_cluster`` is where the Failover object lives, so that its status is written there.

        Raises :class:`RequestError` naming the field when the request cannot run as asked (target
        already active, unknown cluster, group without owner).
        """
        known = frozenset(self.settings.clusters) or None
        source = self.coordination.active_cluster(group.key)
        check_request(failover, group, active_cluster=source, known_clusters=known)
        assert source is not None
        run = new_run(
            run_id=run_id_for(failover, group),
            failover=failover,
            group=group,
            source_cluster=source,
            now=time.time(),
            timing=self.settings.timing,
            failover_cluster=failover_cluster,
            nonce=uuid.uuid4().hex[:12],
        )
        if not self.store.create(run):
            existing = self.store.load(run.run_id)
            return Submission(run=existing or run, created=False)
        CelerySender(self.celery, self.settings).send(START_TASK, run.run_id, 0, countdown=0.0, cluster=None)
        return Submission(run=run, created=True)

    def stand_down(self, group: FailoverGroup, cluster: str, *, reason: str) -> Submission:
        """Make ``cluster`` passive for ``group``, which it no longer owns (a site that came back).

        One stand-down per cluster and ownership epoch (the group's newest history record), however
        often a health checker asks. Raises :class:`RequestError` if ``cluster`` owns the group.
        """
        owner = self.coordination.active_cluster(group.key)
        if owner is None or owner == cluster:
            raise RequestError(
                "cluster", f"{cluster!r} is the active cluster of group {group.key}: not standing it down"
            )
        newest = self.coordination.history(group.key, limit=1)
        last = newest[0] if newest else None
        if (
            last is not None
            and last.outcome == "FAILED"
            and not last.failover
            and last.source_cluster == cluster
        ):
            wait = STANDDOWN_RETRY_AFTER - (time.time() - last.finished_at)
            if wait > 0:
                raise RequestError(
                    "cluster",
                    f"the last stand-down of {cluster!r} failed ({last.message}); tried again in {wait:.0f}s",
                )
        epoch = last.run_id if last else "-"
        run_id = hashlib.sha256(f"standdown|{group.key}|{cluster}|{epoch}".encode()).hexdigest()[:20]
        run = new_standdown_run(
            nonce=uuid.uuid4().hex[:12],
            run_id=run_id,
            group=group,
            cluster=cluster,
            owner=owner,
            reason=reason,
            now=time.time(),
            timing=self.settings.timing,
        )
        if not self.store.create(run):
            return Submission(run=self.store.load(run_id) or run, created=False)
        CelerySender(self.celery, self.settings).send(START_TASK, run.run_id, 0, countdown=0.0, cluster=None)
        return Submission(run=run, created=True)

    def runs(self, *, failover: str | None = None, limit: int = 50) -> list[Run]:
        return self.store.for_failover(failover) if failover else self.store.recent(limit)

    def run(self, run_id: str) -> Run | None:
        return self.store.load(run_id)

    def init_table(self) -> None:
        ensure = getattr(self.coordination, "ensure_table", None)
        if not callable(ensure):
            raise PermanentError("the coordination store has no table to create")
        ensure()

    def history(self, group: GroupKey, *, limit: int = 50) -> list[HistoryRecord]:
        return self.coordination.history(group, limit=limit)

    def lock(self, group: GroupKey) -> LockInfo | None:
        return self.coordination.lock_info(group)

    def release_lock(self, group: GroupKey, *, by: str, reason: str) -> LockInfo | None:
        """Release the group's lock by hand and record who did it and why in history."""
        info = self.coordination.lock_info(group)
        if info is None:
            return None
        now = time.time()
        if self.coordination.release_lock(group, token=info.token):
            self.coordination.record_history(
                group,
                HistoryRecord(
                    run_id=info.run_id,
                    failover="",
                    group=str(group),
                    mode="",
                    source_cluster="",
                    target_cluster="",
                    force=False,
                    reason=reason,
                    started_at=now,
                    finished_at=now,
                    outcome="LOCK_RELEASED",
                    message=f"lock of run {info.run_id} (token {info.token}, holder "
                    f"{info.holder}) released by {by}",
                ),
            )
        return info

    # --- dry runs ---------------------------------------------------------------------------------

    @property
    def effects(self) -> KubeEffects:
        """Read access to the clusters of ``settings.kubeconfig``, built on first use (dry runs only)."""
        with self._celery_lock:
            if self._effects is None:
                self._effects = KubeEffects(KubeClients(self.settings.kubeconfig))
            return self._effects

    def plan(self, failover: Failover, group: FailoverGroup) -> PlanReport:
        """What ``failover`` would change for ``group``, per cluster and object; changes nothing.

        The source is the group's active cluster from the coordination store. Raises
        :class:`RequestError` naming the field when the request could not run (as :meth:`submit`).
        """
        known = frozenset(self.settings.clusters) or None
        source = self.coordination.active_cluster(group.key)
        check_request(failover, group, active_cluster=source, known_clusters=known)
        assert source is not None
        return plan_failover(failover, group, source_cluster=source, effects=self.effects)

    def validate(self, group: FailoverGroup, clusters: list[str]) -> list[Problem]:
        """Every object ``group`` references that is missing or unreadable on one of ``clusters``."""
        return validate_group(group, clusters, self.effects)
