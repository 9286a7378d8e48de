"""The narrow API producers use: submit a failover, read runs, reach the coordination store.

Producers (``failoverctl``, the watcher, the health checker) submit events and read state; they never
run steps. This module is all of ``workers`` they may import besides the settings, the errors and the
ports, so the engine's internals can change without touching them. It reaches the run store, the
coordination table, the messages and the read-only cluster planning, never the engine, the steps, the
tasks or the Celery app (import-linter contracts hold both): importing it loads no Celery and reads
no settings. Celery is loaded by the sender on the first message a producer sends.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Sequence

from fsm.adoption import OUTCOME_ADOPTED
from fsm.audit import ControlRecord
from fsm.autofailover import is_automatic
from fsm.models import Failover, FailoverGroup, GroupKey, RequestError, check_request
from fsm.run import Run, new_resolve_run, new_run, new_standdown_run
from workers import liveness
from workers.admission import LANE_NAMES, Admission, admission_for, queued_for
from workers.control_requests import Asked, ControlRequest, request_control, wait_decided
from workers.errors import PermanentError
from workers.kube import KubeClients, KubeEffects
from workers.logging import configure_logging
from workers.messages import START_TASK, CelerySender, task_name
from workers.metrics import set_heartbeat_age, set_predicted_rto, start_metrics_server
from workers.planning import PlanReport, Problem, StepPlan, plan_failover, validate_group
from workers.ports import Change, Coordination, Divergence, HistoryRecord, LockIndex, LockInfo
from workers.settings import Settings
from workers.store import RunStore
from workers.submission import Restored, Submission, restore_run, submit_run
from workers.wait_store import RedisWaits
from workers.waits import WATCHED_KINDS, WaitTarget, Wakes

__all__ = [
    "WATCHED_KINDS",
    "Asked",
    "Change",
    "ControlRequest",
    "Coordination",
    "Divergence",
    "HistoryRecord",
    "LockInfo",
    "Orchestrator",
    "PlanReport",
    "Problem",
    "RequestError",
    "Restored",
    "StepPlan",
    "Submission",
    "WaitTarget",
    "Wakes",
    "configure_logging",
    "history_epoch",
    "liveness",
    "run_id_for",
    "run_ids_for",
    "set_heartbeat_age",
    "set_predicted_rto",
    "start_metrics_server",
]


# A stand-down that failed is tried again, but not before this many seconds (the checker runs often).
STANDDOWN_RETRY_AFTER = 300.0


def history_epoch(newest: Sequence[HistoryRecord]) -> str:
    """The epoch a group's newest history record (``history(key, limit=1)``) names: its run id."""
    return newest[0].run_id if newest else "-"


def _dynamo_coordination(settings: Settings) -> Coordination:
    """The settings' DynamoDB table; boto3 is imported when a producer first needs it, not before."""
    from workers.dynamo import DynamoCoordination

    return DynamoCoordination.from_settings(settings)


def run_id_for(failover: Failover, group: FailoverGroup) -> str:
    """One run per Failover (namespace, name, spec) and group, wherever and however often it is seen.

    GitOps may apply the same Failover to both clusters, and a restarted watcher sees it again: both
    must lead to the same run. A changed mind is a new Failover (spec fields are immutable), so a new
    name or spec gives a new id.
    """
    return _run_id(failover, group.metadata.namespace, group.metadata.name)


def run_ids_for(failover: Failover) -> dict[tuple[str, str], str]:
    """The run id of every group ``failover`` lists, by ``(namespace, name)`` (see :func:`run_id_for`)."""
    return {(ns, name): _run_id(failover, ns, name) for ns, name in failover.group_namespaces()}


def _run_id(failover: Failover, group_namespace: str, group_name: str) -> str:
    spec = failover.spec.model_dump_json(by_alias=True)
    key = f"{failover.metadata.namespace}/{failover.metadata.name}|{group_namespace}/{group_name}|{spec}"
    return _digest_id(key)


def _digest_id(key: str) -> str:
    """A run id that is a function of what the run is for: the same request gives the same run."""
    return hashlib.sha256(key.encode()).hexdigest()[:20]


class Orchestrator:
    """A producer's handle on one site's stack: its Redis, its broker and the DynamoDB table."""

    def __init__(self, settings: Settings, *, coordination: Coordination | None = None) -> None:
        self.settings = settings
        self._coordination = coordination
        self._store: RunStore | None = None
        self._admission: Admission | None = None
        self.sender = CelerySender.from_settings(settings)
        self._lock = threading.Lock()
        self._effects: KubeEffects | None = None

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
        with self._lock:
            effects, self._effects = self._effects, None
        if effects is not None:
            effects.close()
        self.sender.close()
        with self._lock:
            coordination, self._coordination = self._coordination, None
        close = getattr(coordination, "close", None)
        if callable(close):
            close()

    @property
    def coordination(self) -> Coordination:
        """The coordination store (DynamoDB), built on first use: commands that read only Redis
        (``failoverctl status``, ``watch``) build no DynamoDB client and need no AWS region."""
        with self._lock:
            if self._coordination is None:
                self._coordination = _dynamo_coordination(self.settings)
            return self._coordination

    @property
    def store(self) -> RunStore:
        """The run store, opened on first use: commands that touch no run need no run key."""
        with self._lock:
            if self._store is None:
                self._store = RunStore.from_settings(self.settings)
            return self._store

    @property
    def admission(self) -> Admission | None:
        """The site's admission queue (None when ``settings.admission`` is off)."""
        if not self.settings.admission:
            return None
        store = self.store
        with self._lock:
            if self._admission is None:
                self._admission = admission_for(store, self.settings)
            return self._admission

    def _submit(self, run: Run, *, automatic: bool, groups: int = 1) -> Submission:
        """Store ``run`` and start it, or queue it for admission (:mod:`workers.admission`)."""
        queued = queued_for(run, automatic=automatic, groups=groups, rate=self.settings.bulk_admission_rate)
        if self.admission is not None:
            lane = LANE_NAMES[queued.lane]
            run = run.model_copy(update={"message": f"queued for admission ({lane} lane)"})
        return submit_run(self.store, self.sender, run, admission=self.admission, queued=queued)

    def open_coordination(self) -> Coordination:
        """Build the coordination store now, so that a long-running producer with no AWS region or
        a bad endpoint stops at start with that error, not at its first group."""
        return self.coordination

    def require_run_key(self) -> None:
        """Refuse now (MissingRunKey) rather than at the first run, when there is no run key."""
        self.settings.run_signer()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def source_for(
        self, failover: Failover, group: FailoverGroup, *, known_clusters: frozenset[str] | None = None
    ) -> str:
        """Read the group's active cluster (the run's source) and check ``failover`` against it.

        ``known_clusters`` defaults to the settings' clusters (None: any). Raises
        :class:`RequestError` naming the field when the request cannot run as asked (target already
        active, unknown cluster, group without owner).
        """
        known = known_clusters or frozenset(self.settings.clusters) or None
        source = self.coordination.active_cluster(group.key)
        check_request(failover, group, active_cluster=source, known_clusters=known)
        assert source is not None  # check_request refuses a group without an active cluster
        return source

    def submit(
        self,
        failover: Failover,
        group: FailoverGroup,
        *,
        failover_cluster: str | None = None,
        source: str | None = None,
        drill: bool = False,
    ) -> Submission:
        """Create the run of ``failover`` for ``group`` (once) and send its start message.

        ``failover_cluster`` is where the Failover object lives, so that its status is written there.
        ``source`` is what :meth:`source_for` returned when the caller checked the request already
        (the watcher checks every group before submitting any); without it the request is read and
        checked here, raising :class:`RequestError` as :meth:`source_for` does. ``drill`` marks the
        run (and its history record) as a drill (``failoverctl drill``).
        """
        if source is None:
            source = self.source_for(failover, group)
        run = new_run(
            run_id=run_id_for(failover, group),
            failover=failover,
            group=group,
            source_cluster=source,
            now=time.time(),
            timing=self.settings.timing,
            failover_cluster=failover_cluster,
            nonce=uuid.uuid4().hex[:12],
            drill=drill,
        )
        automatic = is_automatic(failover.spec.reason, failover.metadata.labels)
        return self._submit(run, automatic=automatic, groups=len(failover.spec.failover_groups))

    def stand_down(
        self, group: FailoverGroup, cluster: str, *, reason: str, read_in: str | None = None
    ) -> Submission:
        """Make ``cluster`` passive for ``group``, which it no longer owns (a site that came back).

        One stand-down per cluster and epoch (the group's newest history record), however often a
        health checker asks. ``read_in``: the epoch (:func:`history_epoch`) the caller read before it
        read the cluster's objects; if the history has moved on since (a stand-down or a failover
        finished meanwhile), what it read may be gone already and nothing is started: it reads again.
        Raises :class:`RequestError` if ``cluster`` owns the group, or the read is stale.
        """
        owner = self.coordination.active_cluster(group.key)
        if owner is None or owner == cluster:
            raise RequestError(
                "cluster", f"{cluster!r} is the active cluster of group {group.key}: not standing it down"
            )
        newest = self.coordination.history(group.key, limit=1)
        last = newest[0] if newest else None
        if read_in is not None and read_in != history_epoch(newest):
            raise RequestError(
                "cluster",
                f"{cluster!r} was read before the group's latest history record "
                f"({last.outcome if last else 'none'} of run {last.run_id if last else '-'}): "
                "what it held then may be gone; not standing it down on that read",
            )
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
        run_id = _digest_id(f"standdown|{group.key}|{cluster}|{history_epoch(newest)}")
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
        return self._submit(run, automatic=True)

    def resolve(self, group: FailoverGroup, *, active: str, passive: str, reason: str) -> Submission:
        """Settle a diverged group: a RESOLVE run makes ``passive`` passive, then ``active`` active,
        fences both, records ``active`` as the owner, clears the divergence and writes history.

        Run once per other cluster (``failoverctl group resolve`` does). One run per (group, clusters,
        divergence), so asking twice while the first runs returns the first.
        """
        if active == passive:
            raise RequestError("active", f"{active!r} cannot be both the active and a passive cluster")
        divergence = self.coordination.divergence(group.key)
        epoch = f"{divergence.run_id}|{divergence.at}" if divergence is not None else "not-diverged"
        key = f"resolve|{group.key}|{passive}|{active}|{epoch}"
        run = new_resolve_run(
            nonce=uuid.uuid4().hex[:12],
            run_id=_digest_id(key),
            group=group,
            passive=passive,
            active=active,
            reason=reason,
            now=time.time(),
            timing=self.settings.timing,
        )
        return self._submit(run, automatic=False)

    def rebuild(self, target: str, *, group: GroupKey | None = None) -> list[Restored]:
        """Recreate from the DynamoDB journal the run ``target`` (a run id, or every run of the Failover
        ``NAMESPACE/NAME``) that Redis lost, and send its message again; a run Redis still has is left
        as it is (``created`` False). The group comes from ``group`` or from the locks held under
        ``settings.holder``. Raises :class:`PermanentError` naming what is missing."""
        holder = self.settings.holder
        found: list[tuple[GroupKey, str]] = []
        if "/" in target:
            present = [r for r in self.store.for_failover(target) if not r.terminal]
            if present:
                return [Restored(run=run, created=False, sequence=run.journal_sequence) for run in present]
            for held, run_id in self._held_runs(group):
                entries = self.coordination.journal(held, run_id)
                if entries and Run.model_validate_json(entries[-1].run_json).failover == target:
                    found.append((held, run_id))
        else:
            run = self.store.load(target)
            if run is not None:
                return [Restored(run=run, created=False, sequence=run.journal_sequence)]
            if group is not None:
                found = [(group, target)]
            else:
                found = [(held, run_id) for held, run_id in self._held_runs(None) if run_id == target]
        restored = []
        for key, run_id in found:
            result = restore_run(self.store, self.coordination, key, run_id)
            if result is None:
                continue
            if result.created and not result.run.terminal:
                run = result.run
                if run.dispatch is None:
                    self.sender.send(START_TASK, run.run_id, 0, countdown=0.0, cluster=None)
                else:
                    name = task_name(run.dispatch.step)
                    self.sender.send(
                        name, run.run_id, run.dispatch.ticket, countdown=0.0, cluster=run.current_cluster
                    )
            restored.append(result)
        if not restored:
            where = f"the journal of group {group}" if group else f"the locks held by {holder!r}"
            kind = "Failover" if "/" in target else "run"
            raise PermanentError(
                f"no {kind} {target!r} to rebuild: not in Redis, and no journal entry for it in {where}"
                + ("" if group else " (give --group NAMESPACE/NAME if another holder took the lock)")
            )
        return restored

    def _held_runs(self, group: GroupKey | None) -> list[tuple[GroupKey, str]]:
        """(group, run id) of every lock held under this site's holder (only ``group``'s if given)."""
        index = self.coordination
        if not isinstance(index, LockIndex):
            return []
        pairs = []
        for held in index.held_locks(self.settings.holder):
            if group is None or held.group == group:
                pairs += [(held.group, run_id) for run_id in held.run_ids()]
        return pairs

    def control(self, run_id: str, asked: Asked, *, record_refusal: bool = False) -> ControlRequest:
        """Ask for an operator control of a run in flight (:mod:`fsm.control`): refused at once with the
        reason (nothing stored unless ``record_refusal``), else stored and applied by the engine at the
        next step boundary."""
        return request_control(self.store, self.sender, run_id, asked, record_refusal=record_refusal)

    def control_decided(self, run_id: str, record_id: int, *, timeout: float) -> ControlRecord | None:
        """The control record once applied or refused (None or still pending after ``timeout``)."""
        return wait_decided(self.store, run_id, record_id, timeout=timeout)

    def divergence(self, group: GroupKey) -> Divergence | None:
        return self.coordination.divergence(group)

    def owner(self, group: GroupKey) -> str | None:
        """The group's recorded active cluster (None: no owner recorded yet)."""
        return self.coordination.active_cluster(group)

    def adopt(
        self, group: GroupKey, cluster: str, *, evidence: str, actor: str, reason: str
    ) -> HistoryRecord:
        """Record ``cluster`` as the first owner of ``group`` with an ADOPTED history record (the
        evidence, who and why), in one compare-and-set: only while no owner is recorded. Raises
        :class:`workers.errors.AlreadyOwned` naming the owner when one is (nothing written)."""
        now = time.time()
        record = HistoryRecord(
            run_id=f"adopt-{uuid.uuid4().hex[:12]}",
            failover="",
            group=str(group),
            mode="",
            source_cluster="",
            target_cluster=cluster,
            force=False,
            reason=reason,
            started_at=now,
            finished_at=now,
            outcome=OUTCOME_ADOPTED,
            message=f"{cluster} adopted as the active cluster by {actor}; seen: {evidence}",
            actor=actor,
        )
        self.coordination.adopt(group, cluster, record)
        return record

    def knows_group(self, group: GroupKey) -> bool:
        """Whether the coordination store has anything of ``group``: an owner, a lock, history, a
        divergence or a heartbeat. A run in flight holds the lock, and a run starts only for a group
        with an owner, so a group none of these know has no run either: its name (or operatorID) is
        wrong. Cheapest first; a known group usually answers with its owner, one read."""
        store = self.coordination
        return (
            store.active_cluster(group) is not None
            or store.lock_info(group) is not None
            or bool(store.history(group, limit=1))
            or store.divergence(group) is not None
            or bool(store.heartbeats(group))
        )

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

    # --- waits woken by events (producers.waker) ----------------------------------------------------

    def wakes(self) -> Wakes:
        """What the waker hands watch events to: it wakes the runs waiting for the object seen."""
        return Wakes(RedisWaits(self.store.client, prefix=self.store.prefix), self.sender)

    # --- dry runs ---------------------------------------------------------------------------------

    @property
    def effects(self) -> KubeEffects:
        """Read access to the clusters of ``settings.kubeconfig``, built on first use (dry runs only)."""
        with self._lock:
            if self._effects is None:
                self._effects = KubeEffects(KubeClients(self.settings.kubeconfig))
            return self._effects

    def plan(self, failover: Failover, group: FailoverGroup) -> PlanReport:
        """What ``failover`` would change for ``group``, per cluster and object; changes nothing.

        The source is the group's active cluster from the coordination store. Raises
        :class:`RequestError` naming the field when the request could not run (as :meth:`submit`).
        """
        source = self.source_for(failover, group)
        return plan_failover(failover, group, source_cluster=source, effects=self.effects)

    def validate(self, group: FailoverGroup, clusters: list[str]) -> list[Problem]:
        """Every object ``group`` references that is missing or unreadable on one of ``clusters``."""
        return validate_group(group, clusters, self.effects)
