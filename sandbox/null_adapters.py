"""Adapters that do nothing, instantly: for measuring the engine's own cost per step.

Every effect reports a change, every check is reached, the lock is always granted. State lives in
the worker process only, which is all a benchmark with one worker process needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from fsm.models import GroupKey, ResourceRef
from workers.container import Adapters
from workers.ports import (
    Change,
    Check,
    Divergence,
    Heartbeat,
    HistoryRecord,
    JournalEntry,
    LockGrant,
    LockInfo,
    Observation,
    Role,
)
from workers.settings import Settings


class NullEffects:
    def make_passive(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        group: str = "",
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        return Change(cluster, ref, "make_passive", changed=True)

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
        return Change(cluster, ref, "make_active", changed=True)

    def check(self, cluster: str, ref: ResourceRef, role: Role, *, requested_at: str | None = None) -> Check:
        return Check(True, f"is {role.value}")

    def observe(self, cluster: str, ref: ResourceRef) -> Observation:
        return Observation(exists=True, role=Role.ACTIVE, replicas=1)

    def stop_jobs(self, cluster: str, ref: ResourceRef) -> Change:
        return Change(cluster, ref, "stop_jobs", changed=False)

    def raise_fence(self, cluster: str, group: GroupKey, *, token: int) -> Change:
        ref = ResourceRef(kind="FailoverGroup", namespace=group.namespace, name=group.name)
        return Change(cluster, ref, "raise_fence", changed=True)


class NullCoordination:
    def __init__(self) -> None:
        self._tokens = itertools.count(1)
        self._released: dict[int, str] = {}

    def active_cluster(self, group: GroupKey) -> str | None:
        return "site-a"

    def set_initial_owner(self, group: GroupKey, cluster: str) -> None:
        return None

    def adopt(self, group: GroupKey, cluster: str, record: HistoryRecord) -> None:
        return None

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
        return LockGrant(
            token=next(self._tokens), holder=holder, run_id=run_id, expires_at=now + lease_seconds
        )

    def renew_lease(self, group: GroupKey, *, token: int, lease_seconds: float, now: float) -> float:
        return now + lease_seconds

    def release_lock(self, group: GroupKey, *, token: int) -> bool:
        return True

    def lock_info(self, group: GroupKey) -> LockInfo | None:
        return None

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
        return None

    def record_history(self, group: GroupKey, record: HistoryRecord) -> None:
        return None

    def history(self, group: GroupKey, *, limit: int = 50) -> list[HistoryRecord]:
        return []

    def write_journal(self, group: GroupKey, entry: JournalEntry) -> None:
        return None

    def journal(self, group: GroupKey, run_id: str) -> list[JournalEntry]:
        return []

    def mark_volumes_released(self, group: GroupKey, *, token: int, cluster: str) -> None:
        self._released[token] = cluster

    def volumes_released(self, group: GroupKey, *, token: int) -> str | None:
        return self._released.get(token)

    def write_heartbeat(self, group: GroupKey, heartbeat: Heartbeat) -> None:
        return None

    def heartbeats(self, group: GroupKey) -> list[Heartbeat]:
        return []

    def settle_owner(self, group: GroupKey, *, token: int, owner: str, record: HistoryRecord) -> None:
        return None

    def divergence(self, group: GroupKey) -> Divergence | None:
        return None

    def mark_diverged(self, group: GroupKey, divergence: Divergence) -> None:
        return None


def null_adapters(settings: Settings) -> Adapters:
    return Adapters(effects=NullEffects(), coordination=NullCoordination())
