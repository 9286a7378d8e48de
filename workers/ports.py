"""Ports: what the engine's steps need from the outside world, as typing Protocols.

Two ports, each with a real adapter and a small fake:
- :class:`ClusterEffects`: make one object active or passive on one cluster and check whether it
  got there. Real adapter: ``workers.kube`` (the official ``kubernetes`` client). The semantics per
  kind are docs/API.md's "active/passive" table (``fsm.kinds``); the engine never looks inside an object.
- :class:`Coordination`: everything that must outlive one site (the per-group lock with its fencing
  token, the active cluster, history, heartbeats, the run journal and the volume handshake). Real
  adapter: ``workers.dynamo`` (boto3 against DynamoDB).

Consistency each operation needs (after Patroni's ``AbstractDCS``):

===========================  =====================================================================
operation                    consistency
===========================  =====================================================================
acquire_lock                 CAS-critical: conditional write; only one holder per group, ever
renew_lease                  CAS-critical: conditioned on the caller's fencing token
release_lock                 CAS-critical: conditioned on the token; idempotent when already gone
complete_failover            CAS-critical: one transaction (owner flip + history + release)
                             conditioned on the token and the expected owner
active_cluster, lock_info    strongly consistent read (decisions are taken on it)
settle_owner                 CAS-critical: one transaction (owner set + divergence cleared +
                             history + release) conditioned on the token
adopt                        CAS-critical: one transaction (first owner + ADOPTED history)
                             conditioned on no owner being recorded
divergence                   strongly consistent read
mark_diverged                conditional put: the first record wins until settled
mark_volumes_released        CAS-critical: conditioned on the token
volumes_released             strongly consistent read
write_journal                idempotent put keyed by run and sequence; must succeed before the
                             run's new state is committed
record_history               idempotent put keyed by start time and run id
write_heartbeat, heartbeats  best effort; readers judge staleness by timestamp, never delete
===========================  =====================================================================

All timestamps are float seconds since the epoch, passed in by the caller (the engine owns the clock).
Adapters raise only :mod:`workers.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fsm.kinds import Role as Role  # noqa: PLC0414 (re-exported)
from fsm.models import GroupKey, ResourceRef
from fsm.timeline import StepTiming


@dataclass(frozen=True)
class Check:
    """Whether an object has reached a role, and in words why not (shown in the run's wait)."""

    reached: bool
    detail: str


@dataclass(frozen=True)
class Observation:
    """What an object looks like now, as far as the plan cares."""

    exists: bool
    role: Role | None = None
    replicas: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Change:
    """One change made (or, in a dry run, that would be made) to one object."""

    cluster: str
    ref: ResourceRef
    action: str
    changed: bool
    detail: str = ""


def observe_all(
    effects: ClusterEffects, cluster: str, refs: Sequence[ResourceRef]
) -> dict[ResourceRef, Observation]:
    """``effects.observe`` of every ref on ``cluster``, in parallel where the adapter can
    (``observe_many``, as :class:`workers.kube.KubeEffects` has), else one by one; the first error (in
    the order of ``refs``) is raised."""
    many = getattr(effects, "observe_many", None)
    if many is not None:
        found: dict[ResourceRef, Observation] = many(cluster, refs)
        return found
    return {ref: effects.observe(cluster, ref) for ref in refs}


def check_all(
    effects: ClusterEffects,
    cluster: str,
    refs: Sequence[ResourceRef],
    role: Role,
    requested_at: Mapping[ResourceRef, str | None],
) -> dict[ResourceRef, Check]:
    """``effects.check`` of every ref on ``cluster``, in as few reads as the adapter can
    (``check_many``, as :class:`workers.kube.KubeEffects` has: one per kind and namespace), else one
    by one; the first error (in the order of ``refs``) is raised."""
    many = getattr(effects, "check_many", None)
    if many is not None:
        found: dict[ResourceRef, Check] = many(cluster, refs, role, requested_at=requested_at)
        return found
    return {ref: effects.check(cluster, ref, role, requested_at=requested_at.get(ref)) for ref in refs}


def make_all(
    effects: ClusterEffects,
    cluster: str,
    refs: Sequence[ResourceRef],
    role: Role,
    *,
    epoch: int,
    group: str,
    replicas: Mapping[str, int],
    requested_at: Mapping[ResourceRef, str | None],
    before_write: Callable[[], None] | None = None,
) -> list[Change]:
    """``make_passive``/``make_active`` of every ref on ``cluster``, in as few requests as the adapter
    can (``make_many``, as :class:`workers.kube.KubeEffects` has), else one by one, in order."""
    many = getattr(effects, "make_many", None)
    if many is not None:
        made: list[Change] = many(
            cluster,
            refs,
            role,
            epoch=epoch,
            group=group,
            replicas=replicas,
            requested_at=requested_at,
            before_write=before_write,
        )
        return made
    if role is Role.PASSIVE:
        return [
            effects.make_passive(cluster, ref, epoch=epoch, group=group, before_write=before_write)
            for ref in refs
        ]
    return [
        effects.make_active(
            cluster,
            ref,
            epoch=epoch,
            group=group,
            replicas=replicas.get(ref.name),
            requested_at=requested_at.get(ref),
            before_write=before_write,
        )
        for ref in refs
    ]


class ClusterEffects(Protocol):
    """Acts on one object of one cluster at a time. Every method is idempotent."""

    def make_passive(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        group: str = "",
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        """Apply the kind's "make passive" change; a no-op (``changed=False``) when already done.

        Every write is stamped with ``epoch`` (the run's fencing token) and labelled with ``group``, so
        that the cluster's fence policy can refuse it if a newer run took the group (:class:`Fenced`).
        ``before_write`` is called right before each write attempt (retries after a conflict too): the
        step's lease guard, which raises instead of letting a write go out on a lost lease.
        """
        ...

    def make_active(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        group: str = "",
        replicas: int | None = None,
        requested_at: str | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        """Apply the kind's "make active" change (stamped, labelled and guarded as :meth:`make_passive`).

        ``replicas`` is the fallback count for workloads without the remembered-replicas annotation;
        ``requested_at`` is the Flux reconcile request value (stable across retries of one run).
        """
        ...

    def check(self, cluster: str, ref: ResourceRef, role: Role, *, requested_at: str | None = None) -> Check:
        """Judge from the object's status (never its spec) whether it has reached ``role``."""
        ...

    def observe(self, cluster: str, ref: ResourceRef) -> Observation:
        """Read the object without changing it (validation, plans, dry runs)."""
        ...

    def stop_jobs(self, cluster: str, ref: ResourceRef) -> Change:
        """Delete a suspended CronJob's running Jobs: waiting for them is not enough any more."""
        ...

    def raise_fence(self, cluster: str, group: GroupKey, *, token: int) -> Change:
        """Raise the group's fence on ``cluster`` to ``token`` (never lowers it). Raises
        :class:`workers.errors.Fenced` when the fence is already higher: a newer run owns the group."""
        ...


@dataclass(frozen=True)
class LockGrant:
    token: int
    holder: str
    run_id: str
    expires_at: float


@dataclass(frozen=True)
class LockInfo:
    token: int
    holder: str
    run_id: str
    acquired_at: float
    expires_at: float


@dataclass(frozen=True)
class HistoryRecord:
    """One finished run (successful or not), newest first in ``history``."""

    run_id: str
    failover: str
    group: str
    mode: str
    source_cluster: str
    target_cluster: str
    force: bool
    reason: str
    started_at: float
    finished_at: float
    outcome: str
    downtime_seconds: float | None = None
    failed_step: str | None = None
    message: str = ""
    skipped: tuple[str, ...] = ()
    actor: str = ""  # who did it, for records written by hand or by a producer (adoption)
    drill: bool = False
    # The run's steps (fsm.timeline, at most 64 entries): what reports draw and forecasts sum.
    timeline: tuple[StepTiming, ...] = ()
    controls: tuple[str, ...] = ()  # operators' controls of the run: who, why, when, what became of it


@dataclass(frozen=True)
class JournalEntry:
    """A finished stage of a run, with the run's full state so a new Redis can resume it."""

    run_id: str
    sequence: int
    stage: str
    state: str
    at: float
    run_json: str


@dataclass(frozen=True)
class Divergence:
    """Why a group's clusters no longer match what DynamoDB says: a run failed past its point of no
    return, or the health checker saw the owner not serving while another cluster was active. While
    recorded, no automatic failover or stand-down touches the group; ``failoverctl group resolve``
    settles it and clears it."""

    reason: str
    at: float
    run_id: str = ""
    step: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Heartbeat:
    cluster: str
    health: str
    role: str
    at: float
    resources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HeldLock:
    """An entry of the index of the locks one holder took: the group and the lock's ``runId`` (the
    run id, then ``#`` and the copy's nonce when it has one)."""

    group: GroupKey
    lock_owner: str
    token: int

    def run_ids(self) -> list[str]:
        """The run ids the lock's owner may stand for (with a nonce, the part before the last ``#``)."""
        ids = [self.lock_owner]
        if "#" in self.lock_owner:
            ids.insert(0, self.lock_owner.rpartition("#")[0])
        return ids


@runtime_checkable
class LockIndex(Protocol):
    """The locks taken under one holder, found without a scan: O(locks held). Written in the same
    transaction that takes a lock; entries whose lock is gone are dropped by whoever finds them."""

    def held_locks(self, holder: str) -> list[HeldLock]: ...

    def forget_held_lock(self, holder: str, group: GroupKey, lock_owner: str) -> None:
        """Drop the entry if it still names ``lock_owner`` (idempotent)."""
        ...


class Coordination(Protocol):
    """The cross-site source of truth for each group. See the module docstring for consistency."""

    def active_cluster(self, group: GroupKey) -> str | None: ...

    def set_initial_owner(self, group: GroupKey, cluster: str) -> None:
        """Record the first owner; raises CoordinationConflict if an owner is already recorded."""
        ...

    def adopt(self, group: GroupKey, cluster: str, record: HistoryRecord) -> None:
        """Record ``cluster`` as the group's first owner and write ``record`` (outcome ADOPTED), in one
        transaction, only while no owner is recorded; raises :class:`workers.errors.AlreadyOwned`
        naming the owner otherwise (nothing written). Repeating a call that succeeded is a success."""
        ...

    def acquire_lock(
        self,
        group: GroupKey,
        *,
        holder: str,
        run_id: str,
        lease_seconds: float,
        now: float,
        digest: str | None = None,
    ) -> LockGrant:
        """Take the lock if free or expired; raises LockHeld naming the holder otherwise. ``digest``
        (the run's pinned resources) is kept with the lock: completion is conditioned on it."""
        ...

    def renew_lease(self, group: GroupKey, *, token: int, lease_seconds: float, now: float) -> float:
        """Extend the lease held with ``token``; returns the new expiry or raises LeaseLost."""
        ...

    def release_lock(self, group: GroupKey, *, token: int) -> bool:
        """Release the lock held with ``token``; False (no error) when it is no longer ours."""
        ...

    def lock_info(self, group: GroupKey) -> LockInfo | None: ...

    def complete_failover(
        self,
        group: GroupKey,
        *,
        token: int,
        expected_owner: str,
        new_owner: str,
        record: HistoryRecord,
        digest: str | None = None,
        holder: str | None = None,
    ) -> None:
        """Flip the owner, write history and release the lock atomically (or raise, naming why);
        with ``digest``, only if the lock was taken for the same pinned resources; with ``holder``,
        the holder's lock index entry of the group goes in the same write (:class:`LockIndex`)."""
        ...

    def settle_owner(self, group: GroupKey, *, token: int, owner: str, record: HistoryRecord) -> None:
        """Record ``owner`` whatever the owner was, clear any divergence, write history and release
        the lock held with ``token``, atomically (a resolution; raises LeaseLost if not ours)."""
        ...

    def divergence(self, group: GroupKey) -> Divergence | None:
        """The group's recorded divergence (strongly consistent read), or None."""
        ...

    def mark_diverged(self, group: GroupKey, divergence: Divergence) -> None:
        """Record that the group is diverged (the first record is kept until it is settled)."""
        ...

    def record_history(self, group: GroupKey, record: HistoryRecord) -> None: ...

    def history(self, group: GroupKey, *, limit: int = 50) -> list[HistoryRecord]: ...

    def write_journal(self, group: GroupKey, entry: JournalEntry) -> None: ...

    def journal(self, group: GroupKey, run_id: str) -> list[JournalEntry]: ...

    def mark_volumes_released(self, group: GroupKey, *, token: int, cluster: str) -> None: ...

    def volumes_released(self, group: GroupKey, *, token: int) -> str | None:
        """The cluster that released the volumes under ``token``, or None if not yet."""
        ...

    def write_heartbeat(self, group: GroupKey, heartbeat: Heartbeat) -> None: ...

    def heartbeats(self, group: GroupKey) -> list[Heartbeat]: ...
