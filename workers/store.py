"""The run store: each run's live state in Redis, changed only by compare-and-set on its version.

The only module of the product that imports ``redis``. Consistency per operation:

=================  ================================================================================
create             CAS-critical: succeeds only if no run with that id exists
commit             CAS-critical: one Lua script checks the version, writes the run, bumps the version,
                   keeps the overdue index (a sorted set of in-flight runs by due time), for a
                   finished run sets its TTL, and pushes the run's next message onto the broker's
                   queue (:mod:`workers.outbox`); all or nothing
load, list         plain reads; a stale read is caught by the next commit's version check
=================  ================================================================================

Keys (``prefix`` defaults to ``fo:``): ``{prefix}run:{id}`` a hash of ``v`` (version) and ``d`` (the
run as JSON); ``{prefix}inflight`` the in-flight runs scored by when their message is due;
``{prefix}runs`` every run scored by creation time (trimmed to the newest ``index_limit``);
``{prefix}failover:{ns}/{name}`` the runs of one Failover; ``{prefix}refused:{tag}`` a refused run value
already reported (:mod:`workers.trust`).

Recovery (:mod:`workers.recovery`): ``{prefix}worker:{id}`` one worker's heartbeat (JSON, with a TTL
of ``heartbeat_timeout``) and ``{prefix}workers`` the set of their ids (dead ones pruned on read);
``{prefix}claim:{run}`` the step a worker started (ticket, resend count, worker, time; with a TTL);
``{prefix}turn:{name}`` whose turn it is to sweep (SET NX PX); ``{prefix}sentinel`` a key written once:
a Redis found without it has lost its data (flushed, or replaced by an empty one).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import redis

from fsm.plan import Phase
from fsm.run import Run
from workers.errors import PermanentError, TemporaryError
from workers.recovery import Claim, WorkerInfo
from workers.trust import ForgedRun, Signer, report_forged

if TYPE_CHECKING:
    from workers.messages import Outgoing
    from workers.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

# Compare-and-set of a run (ARGV[1] the expected version) and its place in the in-flight index. With a
# ticket (ARGV[7..8]: ticket and resend count, KEYS[3] the run's claim) the commit must not land while
# the step the run waits for is claimed by a worker (a control is applied only between steps): 2. A
# finished run leaves the admitted runs (KEYS[4]); a run not yet started (ARGV[9] '1') enters the
# in-flight index only once admitted (a control on a run queued for admission leaves it queued). A
# message (ARGV[10], not empty) is pushed onto the broker's queue (KEYS[5]) only by a commit that lands.
_COMMIT = """
local current = redis.call('HGET', KEYS[1], 'v')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[3], 't') == ARGV[7]
   and redis.call('HGET', KEYS[3], 'a') == ARGV[8] then return 2 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
if ARGV[10] ~= '' then redis.call('LPUSH', KEYS[5], ARGV[10]) end
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[6]) end
elseif ARGV[9] == '0' or redis.call('ZSCORE', KEYS[4], ARGV[4]) then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
end
return 1
"""

# How many runs a store remembers with the bytes they were opened from or written as (RunStore._open):
# about the runs admitted per worker slot, so that the step after a commit rarely parses its run again.
_OPENED = 128

_RESEAL = """
if redis.call('HGET', KEYS[1], 'd') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[2])
return 1
"""

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
if ARGV[8] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
elseif ARGV[8] == '2' then
  redis.call('RPUSH', KEYS[7], ARGV[1])
  redis.call('HSET', KEYS[8], ARGV[9], ARGV[10])
  redis.call('ZADD', KEYS[6], 'NX', ARGV[5], ARGV[9])
else
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[6]) - 1)
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[7])
return 1
"""


@dataclass(frozen=True)
class Queued:
    """Where a submitted run waits for admission (:mod:`workers.admission`): its lane (0 an operator's,
    1 automatic), its flow (``lane:failover``) and the flow's seconds between two admissions (0 for a
    Failover of one group)."""

    lane: int
    flow: str
    step: float = 0.0


def admitted_key(prefix: str) -> str:
    """The runs admitted and not finished (:mod:`workers.admission`)."""
    return f"{prefix}admitted"


def flows_key(prefix: str, lane: int) -> str:
    """The flows of one admission lane with runs queued, scored by their next turn."""
    return f"{prefix}flows:{lane}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _translated(method: Callable[P, T]) -> Callable[P, T]:
    """Redis errors become :class:`TemporaryError` at this boundary, so callers see only ours."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as error:
            where = getattr(args[0], "where", "Redis") if args else "Redis"
            raise TemporaryError(f"{where}: {type(error).__name__}: {error} ({method.__name__})") from error

    return call


class RunStore:
    """Runs in Redis. Thread-safe (redis-py pools connections) and fork-safe (pools reset per pid).

    Every run written is sealed by ``signer`` (an HMAC over the run, :mod:`workers.trust`) and every
    run read is opened by it: a run that does not verify is reported (``security.forged_run``) and
    treated as absent, so that nobody acts on it. Every operation raises
    :class:`workers.errors.TemporaryError` when Redis does not answer.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        signer: Signer,
        prefix: str = "fo:",
        ttl: int = 7 * 24 * 3600,
        index_limit: int = 10_000,
    ) -> None:
        self.client = client
        self.signer = signer
        self.prefix = prefix
        self.ttl = ttl
        self.index_limit = index_limit
        self.where = "Redis"  # how errors name it (from_settings: the URL and its variable)
        self._opened: dict[str, tuple[bytes, Run]] = {}
        self._opened_lock = threading.Lock()
        self._commit = client.register_script(_COMMIT)
        self._create = client.register_script(_CREATE)
        self._reseal = client.register_script(_RESEAL)

    @classmethod
    def from_url(cls, url: str, *, signer: Signer, prefix: str = "fo:", ttl: int = 7 * 24 * 3600) -> RunStore:
        return cls(redis.Redis.from_url(url), signer=signer, prefix=prefix, ttl=ttl)

    @classmethod
    def from_settings(cls, settings: Settings) -> RunStore:
        """The store of ``settings``; raises MissingRunKey without a run key (outside development)."""
        from workers.settings import masked_url

        signer = settings.run_signer()
        where = f"Redis at {masked_url(settings.redis_url)} (FAILOVER_REDIS_URL)"
        try:
            store = cls.from_url(
                settings.redis_url, signer=signer, prefix=settings.key_prefix, ttl=settings.run_ttl
            )
        except ValueError as error:  # a URL redis-py cannot parse
            raise PermanentError(f"{where}: {error}; fix FAILOVER_REDIS_URL") from error
        store.where = where
        return store

    def _first_refusal(self, run_id: str, raw: bytes | str) -> bool:
        """True for the first process of the site that refuses this value of this run: a marker
        ``{prefix}refused:{tag}`` (SET NX, a day), named by an HMAC of the run id and the value, so that
        whoever wrote the value cannot pre-create the marker to silence the event."""
        value = raw.encode() if isinstance(raw, str) else raw
        tag = self.signer.tag(run_id.encode() + b"\0" + hashlib.sha256(value).digest())
        return bool(self.client.set(f"{self.prefix}refused:{tag}", "1", nx=True, ex=24 * 3600))

    def _open(self, run_id: str, raw: bytes | str) -> Run | None:
        """The verified run, or None (reported once) when it does not verify. The same bytes read
        again (a step reads its run before and after claiming it) are not verified and parsed twice:
        the last few runs opened are remembered with the exact bytes they came from."""
        value = raw.encode() if isinstance(raw, str) else raw
        seen = self._opened.get(run_id)
        if seen is not None and seen[0] == value:
            return seen[1]
        try:
            opened = self.signer.open(raw, run_id)
        except ForgedRun as refused:
            if self._first_refusal(run_id, raw):
                report_forged(refused)
            return None
        if opened.reseal:
            # Sealed with the previous key or in the earlier layout: seal it again with the current key
            # and layout, unless it changed since.
            self._reseal(keys=[self._run_key(run_id)], args=[raw, self.signer.seal(opened.run)])
        else:
            self._remember(run_id, value, opened.run)
        return opened.run

    def _remember(self, run_id: str, raw: bytes, run: Run) -> None:
        with self._opened_lock:
            self._opened.pop(run_id, None)  # the newest last: the oldest goes first
            self._opened[run_id] = (raw, run)
            while len(self._opened) > _OPENED:
                self._opened.pop(next(iter(self._opened)))

    def close(self) -> None:
        self.client.close()

    @_translated
    def ping(self) -> bool:
        return bool(self.client.ping())

    # --- keys --------------------------------------------------------------------------------

    def _run_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    @property
    def _inflight(self) -> str:
        return f"{self.prefix}inflight"

    @property
    def _index(self) -> str:
        return f"{self.prefix}runs"

    def _failover_key(self, failover: str) -> str:
        return f"{self.prefix}failover:{failover}"

    # --- operations --------------------------------------------------------------------------

    @_translated
    def create(self, run: Run, *, queued: Queued | None = None) -> bool:
        """Store a new run at version 1; False if a run with that id already exists. ``queued``: the
        run waits for admission there (:mod:`workers.admission`) instead of being in flight at once."""
        stored = run.model_copy(update={"version": 1})
        mode = "1" if run.terminal else ("2" if queued is not None else "0")
        flow = queued.flow if queued is not None else ""
        created = self._create(
            keys=[
                *(self._run_key(run.run_id), self._inflight, self._index, self._failover_key(run.failover)),
                admitted_key(self.prefix),
                flows_key(self.prefix, queued.lane if queued is not None else 0),
                f"{self.prefix}flow:{flow}",
                f"{self.prefix}flowstep",
            ],
            args=[
                *(run.run_id, 1, self.signer.seal(stored), run.created_at, run.created_at),
                *(self.index_limit, self.ttl, mode, flow, queued.step if queued is not None else 0),
            ],
        )
        return bool(created)

    @_translated
    def load(self, run_id: str) -> Run | None:
        raw = self.client.hget(self._run_key(run_id), "d")
        return self._open(run_id, raw) if raw is not None else None

    @_translated
    def commit(self, run: Run, *, expected_version: int, outgoing: Outgoing | None = None) -> Run | None:
        """Write ``run`` if the stored version is still ``expected_version``, and push ``outgoing``
        (its next message, :mod:`workers.outbox`) onto the broker's queue in the same script: both or
        neither.

        Returns the stored run (version ``expected_version + 1``) or None when someone else committed
        first (or the run is gone): the caller re-reads and decides again.
        """
        return self.commit_unclaimed(run, expected_version=expected_version, claimed=None, outgoing=outgoing)

    @_translated
    def commit_unclaimed(
        self, run: Run, *, expected_version: int, claimed: Claim | None, outgoing: Outgoing | None = None
    ) -> Run | None:
        """:meth:`commit`, unless the run's claim still names ``claimed``'s ticket and resend count (the
        step the run waited for was started by a worker meanwhile): then None, nothing written."""
        stored = run.model_copy(update={"version": expected_version + 1})
        due = "" if run.terminal else repr(run.dispatch.due_at if run.dispatch else run.created_at)
        ticket, attempt = (str(claimed.ticket), str(claimed.attempt)) if claimed else ("", "")
        sealed = self.signer.seal(stored)
        result = self._commit(
            keys=[
                *(self._run_key(run.run_id), self._inflight, self._claim_key(run.run_id)),
                admitted_key(self.prefix),
                outgoing.key if outgoing else self._run_key(run.run_id),
            ],
            args=[
                *(expected_version, stored.version, sealed, run.run_id, due, self.ttl),
                *(ticket, attempt, "1" if run.state is Phase.PENDING else "0"),
                outgoing.payload if outgoing else "",
            ],
        )
        if result != 1:
            return None
        self._remember(run.run_id, sealed, stored)  # the bytes just written: the next load is free
        return stored

    @_translated
    def defer(self, run_id: str, *, due_at: float) -> None:
        """Move an in-flight run's due time (a paused run: when the sweep next renews its lease); the
        run itself is not touched. A run no longer in flight stays out (ZADD XX)."""
        self.client.zadd(self._inflight, {run_id: due_at}, xx=True)

    @_translated
    def untrack(self, run_id: str) -> None:
        """Drop a run from the in-flight index and the admitted runs (it finished, or its key expired)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self._inflight, run_id)
        pipe.zrem(admitted_key(self.prefix), run_id)
        pipe.execute()

    @_translated
    def overdue(self, *, before: float, limit: int = 100) -> list[str]:
        """Ids of in-flight runs whose message was due before ``before`` (oldest first)."""
        ids = self.client.zrangebyscore(self._inflight, "-inf", before, start=0, num=limit)
        return [_text(i) for i in ids]

    @_translated
    def due(self, *, before: float, limit: int = 1000) -> list[tuple[str, float]]:
        """(id, due time) of the in-flight runs due by ``before``, oldest first: O(log n + due)."""
        pairs: list[tuple[bytes, float]] = self.client.zrangebyscore(  # type: ignore[assignment]
            self._inflight, "-inf", before, start=0, num=limit, withscores=True
        )
        return [(_text(pair[0]), float(pair[1])) for pair in pairs]

    @_translated
    def load_many(self, run_ids: Iterable[str]) -> dict[str, Run]:
        """The runs of ``run_ids`` that exist, by id (one round trip)."""
        return {run.run_id: run for run in self._load_many(run_ids)}

    # --- recovery: heartbeats, claims, turns ----------------------------------------------------

    def _worker_key(self, worker: str) -> str:
        return f"{self.prefix}worker:{worker}"

    def _claim_key(self, run_id: str) -> str:
        return f"{self.prefix}claim:{run_id}"

    @_translated
    def heartbeat(self, worker: str, info: WorkerInfo, *, ttl: float) -> None:
        """Mark ``worker`` alive for ``ttl`` seconds, saying what it consumes and how busy it is."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self._worker_key(worker), info.to_json(), px=max(1, int(ttl * 1000)))
        pipe.sadd(f"{self.prefix}workers", worker)
        pipe.execute()

    @_translated
    def retire(self, worker: str) -> None:
        """Forget ``worker`` now (a clean shutdown): its claims count as dead at once."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self._worker_key(worker))
        pipe.srem(f"{self.prefix}workers", worker)
        pipe.execute()

    @_translated
    def live_workers(self) -> dict[str, WorkerInfo]:
        """Every worker whose heartbeat has not expired (O(workers)); prunes the dead from the set."""
        ids = sorted(_text(i) for i in self.client.smembers(f"{self.prefix}workers"))
        if not ids:
            return {}
        values = self.client.mget([self._worker_key(i) for i in ids])
        dead = [i for i, raw in zip(ids, values, strict=True) if raw is None]
        if dead:
            self.client.srem(f"{self.prefix}workers", *dead)
        return {i: WorkerInfo.from_json(raw) for i, raw in zip(ids, values, strict=True) if raw is not None}

    @_translated
    def claim(self, run_id: str, claim: Claim, *, ttl: float) -> Run | None:
        """Record that ``claim.worker`` started the step the run waits for; the run as it stands
        after the claim (read in the same round trip), or None if it is gone."""
        key = self._claim_key(run_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={"t": claim.ticket, "a": claim.attempt, "w": claim.worker, "at": repr(claim.at)},
        )
        pipe.expire(key, max(1, int(ttl)))
        pipe.hget(self._run_key(run_id), "d")
        raw = pipe.execute()[-1]
        return self._open(run_id, raw) if raw is not None else None

    @_translated
    def claims(self, run_ids: Iterable[str]) -> dict[str, Claim]:
        """The claims recorded for ``run_ids`` (one round trip)."""
        ids = list(run_ids)
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(self._claim_key(run_id))
        found = {}
        for run_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                data = {_text(k): _text(v) for k, v in raw.items()}
                found[run_id] = Claim(
                    ticket=int(data["t"]), attempt=int(data["a"]), worker=data["w"], at=float(data["at"])
                )
        return found

    @_translated
    def take_turn(self, name: str, *, seconds: float) -> bool:
        """True for exactly one caller per ``seconds`` across the site (SET NX PX)."""
        key = f"{self.prefix}turn:{name}"
        return bool(self.client.set(key, "1", nx=True, px=max(1, int(seconds * 1000))))

    @_translated
    def lost_data(self) -> bool:
        """True (once) when the sentinel key was missing: Redis was flushed or replaced by an empty one
        since it was last written, or this is the first call on a new Redis."""
        return bool(self.client.set(f"{self.prefix}sentinel", "1", nx=True))

    @_translated
    def recent(self, limit: int = 50) -> list[Run]:
        ids = [_text(i) for i in self.client.zrevrange(self._index, 0, limit - 1)]
        return self._load_many(ids)

    @_translated
    def for_failover(self, failover: str) -> list[Run]:
        ids = sorted(_text(i) for i in self.client.smembers(self._failover_key(failover)))
        return self._load_many(ids)

    def _load_many(self, ids: Iterable[str]) -> list[Run]:
        ids = list(ids)
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hget(self._run_key(run_id), "d")
        opened = (self._open(i, raw) for i, raw in zip(ids, pipe.execute(), strict=True) if raw is not None)
        return [run for run in opened if run is not None]

    @_translated
    def memory_usage(self, run_id: str) -> int:
        """Bytes Redis holds for one run's key (``MEMORY USAGE``), for the benchmark."""
        return int(self.client.memory_usage(self._run_key(run_id), samples=0) or 0)

    @_translated
    def forget(self, run_id: str) -> None:
        """Remove one run and its index entries (tests and ``failoverctl`` housekeeping)."""
        run = self.load(run_id)
        pipe = self.client.pipeline()
        pipe.delete(self._run_key(run_id))
        pipe.zrem(self._inflight, run_id)
        pipe.zrem(admitted_key(self.prefix), run_id)
        pipe.zrem(self._index, run_id)
        pipe.delete(self._claim_key(run_id))
        if run is not None:
            pipe.srem(self._failover_key(run.failover), run_id)
        pipe.execute()


@_translated
def queue_lengths(url: str, names: Iterable[str], *, prefix: str = "") -> dict[str, int]:
    """Messages waiting in each Celery queue of the broker at ``url`` (the Redis broker keeps a queue
    as a list, under kombu's ``global_keyprefix``)."""
    names = list(names)
    client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(f"{prefix}{name}")
        return {name: int(length) for name, length in zip(names, pipe.execute(), strict=True)}
    finally:
        client.close()
