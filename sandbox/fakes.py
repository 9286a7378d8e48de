"""Small fakes of the two ports, with their state in Redis so that every worker process shares it.

Used by the engine's tests (with fakeredis in one process, or a real Redis across real Celery
worker processes) and by the engine demo. They keep the ports' contracts: idempotent effects, waits
that settle after a few checks, a lock with a monotonically growing fencing token, a completion
that is all or nothing. Faults are injected per operation, cluster and object. Never imported by
``fsm``, ``workers`` or ``producers``: a worker is pointed at :func:`adapters_from_env` through
``FAILOVER_ADAPTERS=sandbox.fakes:adapters_from_env``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis

from fsm.models import GroupKey, ResourceRef
from fsm.timeline import StepTiming
from workers.container import Adapters, dynamo_coordination
from workers.errors import (
    AlreadyOwned,
    ClusterUnreachable,
    CoordinationConflict,
    Fenced,
    ForbiddenError,
    LeaseLost,
    LockHeld,
    NotFoundError,
    PermanentError,
    TemporaryError,
)
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

# Where the change itself is the whole state (docs/API.md: an annotation, a suspend flag), no controller
# has to catch up and the role is reached at once.
_IMMEDIATE = {
    Role.PASSIVE: frozenset({"Ingress", "VirtualService", "HelmRelease", "Kustomization"}),
    Role.ACTIVE: frozenset({"Ingress", "VirtualService", "CronJob"}),
}


def _field(ref: ResourceRef) -> str:
    return f"{ref.kind}/{ref.namespace}/{ref.name}"


class FakeClusters:
    """ClusterEffects over objects that are just a role, a desired role and a countdown of checks."""

    def __init__(self, client: redis.Redis, prefix: str, *, settle_checks: int = 2) -> None:
        self.client = client
        self.prefix = prefix
        self.settle_checks = settle_checks

    # --- test set-up and inspection ----------------------------------------------------------

    def load(self, cluster: str, refs: list[ResourceRef], role: Role, *, replicas: int = 2) -> None:
        for ref in refs:
            obj = {
                "role": role.value,
                "want": role.value,
                "remaining": 0,
                "replicas": replicas,
                "remembered": replicas,
                "epoch": None,
            }
            self.client.hset(self._objects(cluster), _field(ref), json.dumps(obj))

    def role(self, cluster: str, ref: ResourceRef) -> str | None:
        obj = self._get(cluster, ref)
        return obj["role"] if obj else None

    def set_fault(self, op: str, cluster: str, ref: ResourceRef | None, spec: str) -> None:
        """``spec``: ``permanent``, ``forbidden``, ``down`` or ``temporary:N`` (N failures)."""
        self.client.hset(self._faults, f"{op}:{cluster}:{_field(ref) if ref else '*'}", spec)

    def clear_faults(self) -> None:
        self.client.delete(self._faults)

    def timeline(self) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.client.lrange(self._log, 0, -1)]

    # --- ClusterEffects ------------------------------------------------------------------------

    def make_passive(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        group: str = "",
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        return self._make(
            cluster, ref, Role.PASSIVE, epoch, replicas=None, group=group, before_write=before_write
        )

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
        return self._make(
            cluster, ref, Role.ACTIVE, epoch, replicas=replicas, group=group, before_write=before_write
        )

    def check(self, cluster: str, ref: ResourceRef, role: Role, *, requested_at: str | None = None) -> Check:
        self._fault("check", cluster, ref)
        obj = self._require(cluster, ref)
        if obj["want"] != role.value:
            return Check(False, f"is {obj['role']} and was not asked to become {role.value}")
        if obj["role"] != role.value:
            if obj["remaining"] > 0:
                obj["remaining"] -= 1
                self._put(cluster, ref, obj)
                return Check(False, f"becoming {role.value} ({obj['remaining'] + 1} checks to go)")
            obj["role"] = role.value
            self._put(cluster, ref, obj)
            self._record(cluster, ref, "reached", role.value, obj.get("epoch"))
        return Check(True, f"is {role.value}")

    def stop_jobs(self, cluster: str, ref: ResourceRef) -> Change:
        """The fake's Jobs are its settle countdown: stopping them settles the CronJob at once."""
        self._fault("stop_jobs", cluster, ref)
        obj = self._require(cluster, ref)
        if obj["want"] != Role.PASSIVE.value or obj["remaining"] == 0:
            return Change(cluster, ref, "stop_jobs", changed=False, detail="no running Jobs")
        obj["remaining"] = 0
        self._put(cluster, ref, obj)
        self._record(cluster, ref, "stop_jobs", Role.PASSIVE.value, obj.get("epoch"))
        return Change(cluster, ref, "stop_jobs", changed=True, detail="deleted running Jobs")

    def raise_fence(self, cluster: str, group: GroupKey, *, token: int) -> Change:
        """The group's fence on ``cluster`` grows to ``token``; a lower token is refused (Fenced), as
        the clusters' admission policy (deploy/fencing) refuses it."""
        ref = ResourceRef(kind="FailoverGroup", namespace=group.namespace, name=group.name)
        self._fault("raise_fence", cluster, ref)
        current = self._fence(cluster, group.namespace, group.name)
        if current > token:
            raise Fenced(
                f"fenced: the fence of {group} on {cluster} is {current}, above token {token}",
                cluster=cluster,
            )
        if current == token:
            return Change(cluster, ref, "raise_fence", changed=False, detail=f"fence already {token}")
        self.client.set(self._fence_key(cluster, group.namespace, group.name), token)
        self._record(cluster, ref, "raise_fence", "fence", token)
        return Change(cluster, ref, "raise_fence", changed=True, detail=f"fence {current} -> {token}")

    def fence(self, cluster: str, group: GroupKey) -> int:
        return self._fence(cluster, group.namespace, group.name)

    def _fence_key(self, cluster: str, namespace: str, name: str) -> str:
        return f"{self.prefix}fence:{cluster}:{namespace}/{name}"

    def _fence(self, cluster: str, namespace: str, name: str) -> int:
        return int(self.client.get(self._fence_key(cluster, namespace, name)) or 0)

    def observe(self, cluster: str, ref: ResourceRef) -> Observation:
        self._fault("observe", cluster, ref)
        obj = self._get(cluster, ref)
        if obj is None:
            return Observation(exists=False, detail="not found")
        return Observation(exists=True, role=Role(obj["role"]), replicas=obj["remembered"])

    # --- internals -----------------------------------------------------------------------------

    @property
    def _faults(self) -> str:
        return f"{self.prefix}faults"

    @property
    def _log(self) -> str:
        return f"{self.prefix}timeline"

    def _objects(self, cluster: str) -> str:
        return f"{self.prefix}objects:{cluster}"

    def _get(self, cluster: str, ref: ResourceRef) -> dict[str, Any] | None:
        raw = self.client.hget(self._objects(cluster), _field(ref))
        return json.loads(raw) if raw else None

    def _put(self, cluster: str, ref: ResourceRef, obj: dict[str, Any]) -> None:
        self.client.hset(self._objects(cluster), _field(ref), json.dumps(obj))

    def _require(self, cluster: str, ref: ResourceRef) -> dict[str, Any]:
        obj = self._get(cluster, ref)
        if obj is None:
            raise NotFoundError(f"{ref} not found", cluster=cluster, obj=str(ref))
        return obj

    def _record(self, cluster: str, ref: ResourceRef, op: str, role: str, epoch: int | None) -> None:
        entry = {
            "at": time.time(),
            "cluster": cluster,
            "ref": _field(ref),
            "kind": ref.kind,
            "op": op,
            "role": role,
            "epoch": epoch,
        }
        self.client.rpush(self._log, json.dumps(entry))

    def _fault(self, op: str, cluster: str, ref: ResourceRef) -> None:
        for key in (f"{op}:{cluster}:{_field(ref)}", f"{op}:{cluster}:*", f"*:{cluster}:*"):
            spec = self.client.hget(self._faults, key)
            if spec is None:
                continue
            text = spec.decode()
            if text == "down":
                raise ClusterUnreachable("connection refused", cluster=cluster)
            if text == "forbidden":
                raise ForbiddenError(
                    f"cannot {op} {ref.kind}: forbidden by RBAC", cluster=cluster, obj=str(ref)
                )
            if text == "permanent":
                raise PermanentError(f"injected permanent fault on {op}", cluster=cluster, obj=str(ref))
            if text.startswith("temporary:"):
                left = int(text.split(":", 1)[1])
                if left > 0:
                    self.client.hset(self._faults, key, f"temporary:{left - 1}")
                    raise TemporaryError(
                        f"injected temporary fault on {op}", cluster=cluster, obj=str(ref), retry_after=None
                    )

    def _make(
        self,
        cluster: str,
        ref: ResourceRef,
        role: Role,
        epoch: int,
        *,
        replicas: int | None,
        group: str = "",
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        op = "make_passive" if role is Role.PASSIVE else "make_active"
        self._fault(op, cluster, ref)
        obj = self._require(cluster, ref)
        if obj["want"] == role.value:
            return Change(cluster, ref, op, changed=False, detail=f"already {role.value}")
        if before_write is not None:
            before_write()
        fence = self._fence(cluster, ref.namespace, group) if group else 0
        if epoch < max(fence, int(obj.get("epoch") or 0)):
            raise Fenced(
                f"fenced: epoch {epoch} is below the fence {fence} of {group} on {cluster}",
                cluster=cluster,
                obj=str(ref),
            )
        if role is Role.ACTIVE and replicas is not None and not obj.get("remembered"):
            obj["remembered"] = replicas
        obj.update(want=role.value, remaining=self.settle_checks, epoch=epoch)
        if ref.kind in _IMMEDIATE[role]:
            obj.update(role=role.value, remaining=0)
        self._put(cluster, ref, obj)
        self._record(cluster, ref, op, role.value, epoch)
        if ref.kind in _IMMEDIATE[role]:
            self._record(cluster, ref, "reached", role.value, epoch)
        return Change(cluster, ref, op, changed=True, detail=f"asked to become {role.value}")


_ACQUIRE = """
local lock = redis.call('HGETALL', KEYS[1])
if #lock > 0 then
  local h = {}
  for i = 1, #lock, 2 do h[lock[i]] = lock[i + 1] end
  if tonumber(h['expires_at']) >= tonumber(ARGV[3]) then
    return {0, h['holder'], h['run_id'], h['expires_at']}
  end
end
local token = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'token', token, 'holder', ARGV[1], 'run_id', ARGV[2],
           'acquired_at', ARGV[3], 'expires_at', ARGV[4])
return {token, ARGV[1], ARGV[2], ARGV[4]}
"""

_RENEW = """
local token = redis.call('HGET', KEYS[1], 'token')
if not token then return -1 end
if token ~= ARGV[1] then return -2 end
redis.call('HSET', KEYS[1], 'expires_at', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return -1 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -2 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('DEL', KEYS[1])
return 1
"""


# Adoption: the owner only if none is recorded, and the history record, in one script.
_ADOPT = """
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
return ''
"""


_SETTLE = """
local lock = redis.call('HGET', KEYS[1], 'token')
if not lock or tonumber(lock) ~= tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('DEL', KEYS[4])
redis.call('DEL', KEYS[1])
return 1
"""


class FakeCoordination:
    """The Coordination port on Redis, with Lua scripts standing in for DynamoDB's conditions."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._complete = client.register_script(_COMPLETE)
        self._settle = client.register_script(_SETTLE)
        self._adopt = client.register_script(_ADOPT)

    def _key(self, what: str, group: GroupKey, *rest: str) -> str:
        return ":".join([f"{self.prefix}{what}", group.operator_id, group.namespace, group.name, *rest])

    def _count(self, operation: str) -> None:
        self.client.hincrby(f"{self.prefix}calls", operation, 1)

    def calls(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(f"{self.prefix}calls").items()}

    def active_cluster(self, group: GroupKey) -> str | None:
        self._count("active_cluster")
        raw = self.client.get(self._key("owner", group))
        return raw.decode() if raw else None

    def set_initial_owner(self, group: GroupKey, cluster: str) -> None:
        self._count("set_initial_owner")
        if not self.client.set(self._key("owner", group), cluster, nx=True):
            raise CoordinationConflict(f"group {group} already has an owner: {self.active_cluster(group)}")

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
        self._count("acquire_lock")
        token, who, run, expires = self._acquire(
            keys=[self._key("lock", group), self._key("token", group)],
            args=[holder, run_id, now, now + lease_seconds],
        )
        if int(token) == 0:
            raise LockHeld(
                f"group {group} is locked by {who.decode()} (run {run.decode()}) until {float(expires):.0f}",
                holder=who.decode(),
                expires_at=float(expires),
            )
        if digest is not None:
            self.client.hset(self._key("lock", group), "digest", digest)
        return LockGrant(token=int(token), holder=holder, run_id=run_id, expires_at=now + lease_seconds)

    def renew_lease(self, group: GroupKey, *, token: int, lease_seconds: float, now: float) -> float:
        self._count("renew_lease")
        result = self._renew(keys=[self._key("lock", group)], args=[token, now + lease_seconds, now])
        # Like DynamoDB's condition on the token: an expired lease nobody took over is still ours.
        reasons = {-1: "the lock is gone", -2: "another run holds the lock"}
        if result < 0:
            raise LeaseLost(f"lease of group {group} with token {token} lost: {reasons[result]}")
        return now + lease_seconds

    def release_lock(self, group: GroupKey, *, token: int) -> bool:
        self._count("release_lock")
        return bool(self._release(keys=[self._key("lock", group)], args=[token]))

    def lock_info(self, group: GroupKey) -> LockInfo | None:
        self._count("lock_info")
        raw = {k.decode(): v.decode() for k, v in self.client.hgetall(self._key("lock", group)).items()}
        if not raw:
            return None
        return LockInfo(
            token=int(raw["token"]),
            holder=raw["holder"],
            run_id=raw["run_id"],
            acquired_at=float(raw["acquired_at"]),
            expires_at=float(raw["expires_at"]),
        )

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
        self._count("complete_failover")
        held = self.client.hget(self._key("lock", group), "digest")
        if digest is not None and (held is None or held.decode() != digest):
            raise CoordinationConflict(
                f"completion refused: the lock of group {group} was taken for other resources"
            )
        result = self._complete(
            keys=[self._key("lock", group), self._key("owner", group), self._key("history", group)],
            args=[token, expected_owner, new_owner, json.dumps(asdict(record))],
        )
        if result == -1:
            raise LeaseLost(f"completion refused: token {token} no longer holds the lock of group {group}")
        if result == -2:
            raise CoordinationConflict(
                f"completion refused: group {group} is owned by {self.active_cluster(group)!r}, "
                f"expected {expected_owner!r}"
            )

    def record_history(self, group: GroupKey, record: HistoryRecord) -> None:
        self._count("record_history")
        self.client.lpush(self._key("history", group), json.dumps(asdict(record)))

    def history(self, group: GroupKey, *, limit: int = 50) -> list[HistoryRecord]:
        self._count("history")
        items = [json.loads(raw) for raw in self.client.lrange(self._key("history", group), 0, limit - 1)]
        return [
            HistoryRecord(
                **{
                    **item,
                    "skipped": tuple(item["skipped"]),
                    "timeline": tuple(StepTiming(**entry) for entry in item.get("timeline", ())),
                }
            )
            for item in items
        ]

    def write_journal(self, group: GroupKey, entry: JournalEntry) -> None:
        self._count("write_journal")
        self.client.hset(
            self._key("journal", group, entry.run_id), str(entry.sequence), json.dumps(asdict(entry))
        )

    def journal(self, group: GroupKey, run_id: str) -> list[JournalEntry]:
        self._count("journal")
        raw = self.client.hgetall(self._key("journal", group, run_id))
        return sorted((JournalEntry(**json.loads(v)) for v in raw.values()), key=lambda e: e.sequence)

    def mark_volumes_released(self, group: GroupKey, *, token: int, cluster: str) -> None:
        self._count("mark_volumes_released")
        current = self.client.hget(self._key("lock", group), "token")
        if current is None or int(current) != token:
            raise LeaseLost(f"cannot mark volumes released with token {token}: not the current lock")
        self.client.set(self._key("volumes", group, str(token)), cluster)

    def volumes_released(self, group: GroupKey, *, token: int) -> str | None:
        self._count("volumes_released")
        raw = self.client.get(self._key("volumes", group, str(token)))
        return raw.decode() if raw else None

    def write_heartbeat(self, group: GroupKey, heartbeat: Heartbeat) -> None:
        self._count("write_heartbeat")
        self.client.hset(self._key("heartbeats", group), heartbeat.cluster, json.dumps(asdict(heartbeat)))

    def heartbeats(self, group: GroupKey) -> list[Heartbeat]:
        self._count("heartbeats")
        return [
            Heartbeat(**json.loads(v)) for v in self.client.hgetall(self._key("heartbeats", group)).values()
        ]

    def adopt(self, group: GroupKey, cluster: str, record: HistoryRecord) -> None:
        self._count("adopt")
        owner = self._adopt(
            keys=[self._key("owner", group), self._key("history", group)],
            args=[cluster, json.dumps(asdict(record))],
        )
        if owner:
            owner = owner.decode() if isinstance(owner, bytes) else str(owner)
            raise AlreadyOwned(f"group {group} already has an owner, {owner!r}", owner=owner)

    def settle_owner(self, group: GroupKey, *, token: int, owner: str, record: HistoryRecord) -> None:
        self._count("settle_owner")
        result = self._settle(
            keys=[
                self._key("lock", group),
                self._key("owner", group),
                self._key("history", group),
                self._key("diverged", group),
            ],
            args=[token, owner, json.dumps(asdict(record))],
        )
        if result == -1:
            raise LeaseLost(f"settlement refused: token {token} no longer holds the lock of group {group}")

    def divergence(self, group: GroupKey) -> Divergence | None:
        self._count("divergence")
        raw = self.client.get(self._key("diverged", group))
        return Divergence(**json.loads(raw)) if raw else None

    def mark_diverged(self, group: GroupKey, divergence: Divergence) -> None:
        self._count("mark_diverged")
        self.client.set(self._key("diverged", group), json.dumps(asdict(divergence)), nx=True)


def fake_adapters(client: redis.Redis, prefix: str, *, settle_checks: int = 2) -> Adapters:
    return Adapters(
        effects=FakeClusters(client, prefix, settle_checks=settle_checks),
        coordination=FakeCoordination(client, prefix),
    )


def adapters_from_env(settings: Settings) -> Adapters:
    """The factory a worker process loads: fakes in the worker's Redis under ``FAILOVER_FAKE_PREFIX``."""
    prefix = os.environ.get("FAILOVER_FAKE_PREFIX", f"{settings.key_prefix}fake:")
    settle = int(os.environ.get("FAILOVER_FAKE_SETTLE_CHECKS", "2"))
    return fake_adapters(redis.Redis.from_url(settings.redis_url), prefix, settle_checks=settle)


def fake_clusters_with_dynamodb(settings: Settings) -> Adapters:
    """Fake clusters in Redis, the real DynamoDB adapter at ``FAILOVER_DYNAMODB_ENDPOINT_URL``."""
    prefix = os.environ.get("FAILOVER_FAKE_PREFIX", f"{settings.key_prefix}fake:")
    settle = int(os.environ.get("FAILOVER_FAKE_SETTLE_CHECKS", "2"))
    client = redis.Redis.from_url(settings.redis_url)
    return Adapters(
        effects=FakeClusters(client, prefix, settle_checks=settle), coordination=dynamo_coordination(settings)
    )
