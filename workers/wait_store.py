"""The wait registry in Redis (the port :class:`workers.waits.WaitRegistry`); the run store's client.

Keys (``prefix`` as the run store's, ``fo:`` by default), all with a TTL so that a run that ends
without clearing them (a crash, a redrive that failed it) leaves nothing behind for long:

- ``{prefix}wait:{cluster}:{kind}:{ns}/{name}``: a hash, run id -> what it waits for (JSON: step,
  ticket, role, cluster, reconcile stamp);
- ``{prefix}waits:{cluster}:{kind}``: the set of ``ns/name`` some run waits for (the resync's index);
- ``{prefix}waitrun:{run}``: the set of the run's wait hashes, to clear them;
- ``{prefix}wake:{run}:{ticket}``: the wake claimed for that ticket (SET NX), valued the event's time;
- ``{prefix}woken:{run}``: a hash, step -> attempts started by a wake (for status and tests).

Registrations are not signed: a forged one can only make a step check its objects once more (the
engine acts only on the ticket the run expects).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import redis

from fsm.plan import Step
from workers.ports import Role
from workers.store import _text, _translated
from workers.waits import Registration, WaitTarget

_WOKEN_TTL = 24 * 3600


class RedisWaits:
    def __init__(self, client: redis.Redis, *, prefix: str = "fo:") -> None:
        self.client = client
        self.prefix = prefix
        self.where = "Redis"

    def _hash(self, target: WaitTarget) -> str:
        return f"{self.prefix}wait:{target.cluster}:{target.kind}:{target.object_key}"

    def _index(self, cluster: str, kind: str) -> str:
        return f"{self.prefix}waits:{cluster}:{kind}"

    def _run(self, run_id: str) -> str:
        return f"{self.prefix}waitrun:{run_id}"

    @_translated
    def register(
        self, run_id: str, targets: Sequence[WaitTarget], registration: Registration, *, ttl: float
    ) -> None:
        seconds = max(1, math.ceil(ttl))
        value = json.dumps(
            {
                "step": registration.step.value,
                "ticket": registration.ticket,
                "role": registration.role.value,
                "cluster": registration.cluster,
                "requested_at": registration.requested_at,
                "targets": [[t.kind, t.namespace, t.name] for t in registration.targets],
            }
        )
        previous = {_text(k) for k in self.client.smembers(self._run(run_id))}
        hashes = {self._hash(t) for t in targets}
        pipe = self.client.pipeline(transaction=True)
        for stale in previous - hashes:
            pipe.hdel(stale, run_id)
        for target in targets:
            pipe.hset(self._hash(target), run_id, value)
            # Never shorten what another run's registration of the same object needs.
            pipe.expire(self._hash(target), seconds, nx=True)
            pipe.expire(self._hash(target), seconds, gt=True)
            pipe.sadd(self._index(target.cluster, target.kind), target.object_key)
            pipe.expire(self._index(target.cluster, target.kind), seconds, nx=True)
            pipe.expire(self._index(target.cluster, target.kind), seconds, gt=True)
        pipe.delete(self._run(run_id))
        pipe.sadd(self._run(run_id), *hashes)
        pipe.expire(self._run(run_id), seconds)
        pipe.execute()

    @_translated
    def clear(self, run_id: str) -> None:
        hashes = [_text(k) for k in self.client.smembers(self._run(run_id))]
        pipe = self.client.pipeline(transaction=True)
        for key in hashes:
            pipe.hdel(key, run_id)
        pipe.delete(self._run(run_id))
        pipe.execute()

    @_translated
    def registrations(self, target: WaitTarget) -> dict[str, Registration]:
        found: dict[str, Registration] = {}
        for run_id, raw in self.client.hgetall(self._hash(target)).items():
            try:
                data = json.loads(raw)
                found[_text(run_id)] = Registration(
                    step=Step(data["step"]),
                    ticket=int(data["ticket"]),
                    role=Role(data["role"]),
                    cluster=str(data["cluster"]),
                    requested_at=data.get("requested_at"),
                    targets=tuple(
                        WaitTarget(target.cluster, str(k), str(ns), str(n))
                        for k, ns, n in data.get("targets") or ()
                    ),
                )
            except (ValueError, KeyError, TypeError):
                continue  # not ours to act on: the step's own polling covers that run
        return found

    @_translated
    def registered(self, cluster: str, kind: str) -> list[WaitTarget]:
        index = self._index(cluster, kind)
        members = sorted(_text(m) for m in self.client.smembers(index))
        targets = [WaitTarget(cluster, kind, *m.split("/", 1)) for m in members if "/" in m]
        if not targets:
            return []
        pipe = self.client.pipeline(transaction=False)
        for target in targets:
            pipe.exists(self._hash(target))
        alive = pipe.execute()
        gone = [t.object_key for t, exists in zip(targets, alive, strict=True) if not exists]
        if gone:
            self.client.srem(index, *gone)  # no run waits for them any more
        return [t for t, exists in zip(targets, alive, strict=True) if exists]

    @_translated
    def claim(self, run_id: str, ticket: int, *, at: float, ttl: float) -> bool:
        key = f"{self.prefix}wake:{run_id}:{ticket}"
        return bool(self.client.set(key, repr(at), nx=True, ex=max(1, math.ceil(ttl))))

    @_translated
    def taken(self, run_id: str, ticket: int, step: Step) -> float | None:
        raw = self.client.get(f"{self.prefix}wake:{run_id}:{ticket}")
        if raw is None:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(f"{self.prefix}woken:{run_id}", step.value, 1)
        pipe.expire(f"{self.prefix}woken:{run_id}", _WOKEN_TTL)
        pipe.execute()
        try:
            return float(_text(raw))
        except ValueError:
            return None

    @_translated
    def woken(self, run_id: str) -> dict[str, int]:
        counts = self.client.hgetall(f"{self.prefix}woken:{run_id}")
        return {_text(k): int(v) for k, v in counts.items()}
