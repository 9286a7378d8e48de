"""Admission: runs start when the site has room for them, fairly, so that each finishes in its time.

When a site dies every group it served asks to fail over at once. Started all together, a thousand
runs advance in lockstep behind one long queue: every message waits a minute, every run finishes near
the end, past its group's deadline, and the overdue sweep cannot tell a queued message from a lost
one. So a submitted run is stored PENDING and *queued for admission*; it is admitted (put in flight,
its start message sent) only while the site's **ready work** is below a bound: the in-flight runs
whose message is due now (queued or running; a run waiting on a countdown holds no message) must be
fewer than ``admission_per_slot`` per live worker slot (each worker's heartbeat says its slots), and
the runs admitted and not finished fewer than ``admitted_per_slot`` per slot (the runs waiting on a
countdown come due again: without this bound a site of slow waits would all be admitted, and its
polls would come due together in one long queue). A
run's deadlines count from its start, that is from its admission (``fsm.decide``), never from its
submission. ``max_runs_in_flight`` caps the runs admitted and not finished, whatever the work.

Which run goes next (one Lua script, atomic with the bound):

- two **lanes**: the *interactive* lane (0: an operator's Failover of one group, a group resolve)
  goes before the *bulk* lane (1: the health checker's automatic Failovers and stand-downs, and
  Failovers listing several groups), and has room of its own on top of what the bulk lane may fill
  (ready work up to the bulk lane's admitted bound plus its own ready bound, admitted runs up to
  twice the bulk lane's): an operator's Failover is admitted at once even while a thousand automatic
  ones keep the site at its bounds, instead of waiting for one of them to finish;
- in a lane, **flows** (one per Failover) take turns: the flow whose turn is earliest goes next, and
  after each admission its next turn is ``now + 1/bulk_admission_rate`` (a Failover of one group has
  no next turn). So a Failover listing many groups is admitted at that rate at most, Failovers
  share the room in turn, and a new Failover waits at most one turn of each other flow; single
  Failovers go first come, first served.

Admission happens when a run is submitted, whenever a run finishes or starts waiting (it frees
ready work), and in each overdue sweep (the backstop, and for flows whose turn came). Keys
(``prefix`` as the run store's): ``{prefix}admitted`` the runs admitted and not finished (scored by
admission time), ``{prefix}flows:{lane}`` the flows with queued runs (scored by their next turn),
``{prefix}flow:{lane}:{failover}`` a flow's queued run ids in order, ``{prefix}flowstep`` each flow's
seconds between two admissions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from fsm.run import Run
from workers.messages import START_TASK, Sender
from workers.metrics import observe_admission
from workers.settings import Settings
from workers.store import Queued, RunStore, _text, _translated, admitted_key, flows_key

log = structlog.get_logger(__name__)

INTERACTIVE_LANE = 0  # an operator's Failover of one group, a group resolve
BULK_LANE = 1  # the health checker's automatic Failovers and stand-downs, Failovers of several groups
LANES = (INTERACTIVE_LANE, BULK_LANE)
LANE_NAMES = {INTERACTIVE_LANE: "interactive", BULK_LANE: "bulk"}  # in messages and metric labels

# KEYS: in-flight index, admitted, flows of lane 0, flows of lane 1, flow steps.
# ARGV: now, ready bound of lane 1, admitted bound of lane 1, most to admit now, the flow queues' key
# prefix, ready bound of lane 0, admitted bound of lane 0.
_ADMIT = """
local now = tonumber(ARGV[1])
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local admitted = redis.call('ZCARD', KEYS[2])
local out = {}
for lane = 3, 4 do
  local bound = tonumber(lane == 3 and ARGV[6] or ARGV[2])
  local most = tonumber(lane == 3 and ARGV[7] or ARGV[3])
  while ready < bound and admitted < most and #out < tonumber(ARGV[4]) do
    local head = redis.call('ZRANGE', KEYS[lane], 0, 0, 'WITHSCORES')
    if #head == 0 or tonumber(head[2]) > now then break end
    local flow = head[1]
    local queue = ARGV[5] .. flow
    local run = redis.call('LPOP', queue)
    if run then
      redis.call('ZADD', KEYS[2], now, run)
      redis.call('ZADD', KEYS[1], now, run)
      ready = ready + 1
      admitted = admitted + 1
      out[#out + 1] = run
    end
    if redis.call('LLEN', queue) == 0 then
      redis.call('ZREM', KEYS[lane], flow)
      redis.call('HDEL', KEYS[5], flow)
    else
      local step = tonumber(redis.call('HGET', KEYS[5], flow) or '0')
      redis.call('ZADD', KEYS[lane], now + step, flow)
    end
  end
end
return out
"""


def queued_for(run: Run, *, automatic: bool, groups: int, rate: float) -> Queued:
    """Where ``run``, one of the ``groups`` runs of its Failover, waits for admission."""
    lane = BULK_LANE if automatic or groups > 1 else INTERACTIVE_LANE
    return Queued(lane=lane, flow=f"{lane}:{run.failover}", step=1.0 / rate if groups > 1 else 0.0)


# KEYS: admitted; ARGV: the run keys' prefix. Drops the admitted runs whose key is gone.
_PRUNE = """
local gone = 0
for _, run in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. run) == 0 then
    redis.call('ZREM', KEYS[1], run)
    gone = gone + 1
  end
end
return gone
"""


@dataclass(frozen=True)
class Bounds:
    """How much may be admitted: ready work per live worker slot, and admitted runs in all."""

    per_slot: int
    max_in_flight: int
    admitted_per_slot: int = 50


class Admission:
    """The admission queue of one run store (see the module docstring). Thread-safe."""

    def __init__(
        self,
        store: RunStore,
        bounds: Bounds,
        *,
        clock: Callable[[], float] = time.time,
        slots_ttl: float = 1.0,
    ) -> None:
        self.store = store
        self.bounds = bounds
        self.clock = clock
        self.slots_ttl = slots_ttl
        self._script = store.client.register_script(_ADMIT)
        self._prune = store.client.register_script(_PRUNE)
        self._slots: tuple[float, int] | None = None

    def _slots_now(self) -> int:
        """The live workers' slots (at least 1: with no heartbeat known, one worker is assumed),
        read at most once per ``slots_ttl``."""
        now = time.monotonic()
        if self._slots is None or now - self._slots[0] > self.slots_ttl:
            workers = self.store.live_workers()
            self._slots = (now, max(1, sum(info.slots for info in workers.values())))
        return self._slots[1]

    @_translated
    def admit(self, sender: Sender, *, most: int = 100) -> list[str]:
        """Admit the runs that fit now, in turn, and send their start messages; their ids."""
        prefix = self.store.prefix
        now = self.clock()
        slots = self._slots_now()
        ready = self.bounds.per_slot * slots
        admitted_bound = min(self.bounds.max_in_flight, self.bounds.admitted_per_slot * slots)
        ids = self._script(
            keys=[
                f"{prefix}inflight",
                admitted_key(prefix),
                *(flows_key(prefix, lane) for lane in LANES),
                f"{prefix}flowstep",
            ],
            args=[
                *(now, ready, admitted_bound, most, f"{prefix}flow:"),
                # The interactive lane's room comes on top of all the bulk lane can fill.
                *(admitted_bound + ready, min(self.bounds.max_in_flight, 2 * admitted_bound)),
            ],
        )
        admitted = [_text(i) for i in ids]
        if not admitted:
            return []
        runs = self.store.load_many(admitted)
        started = []
        for run_id in admitted:
            run = runs.get(run_id)
            if run is None or run.terminal:
                self.store.untrack(run_id)  # cancelled (or expired) while it waited
                continue
            sender.send(START_TASK, run_id, 0, countdown=0.0, cluster=None)
            started.append(run_id)
        if started:
            observe_admission([now - runs[i].created_at for i in started])
            log.info("runs.admitted", runs=len(started), first=started[0])
        return started

    def waiting(self) -> int:
        """How many runs wait for admission, in all."""
        return sum(self.queued().values())

    @_translated
    def queued(self) -> dict[str, int]:
        """How many runs wait for admission in each lane, by its name (``interactive``, ``bulk``): the
        gauge ``failover_admission_queued_runs``, read at scrape time. Two round trips, no scan: the
        lanes' flows (one per Failover with queued runs), then the length of each flow's queue."""
        prefix = self.store.prefix
        pipe = self.store.client.pipeline(transaction=False)
        for lane in LANES:
            pipe.zrange(flows_key(prefix, lane), 0, -1)
        flows = [
            (lane, _text(flow))
            for lane, members in zip(LANES, pipe.execute(), strict=True)
            for flow in members
        ]
        counts = {LANE_NAMES[lane]: 0 for lane in LANES}
        if not flows:
            return counts
        pipe = self.store.client.pipeline(transaction=False)
        for _, flow in flows:
            pipe.llen(f"{prefix}flow:{flow}")
        for (lane, _), length in zip(flows, pipe.execute(), strict=True):
            counts[LANE_NAMES[lane]] += int(length)
        return counts

    @_translated
    def prune(self) -> int:
        """Forget admitted runs whose key is gone (expired, or removed by hand) without a finishing
        commit; a finished run leaves at its last commit. One script, no run read: O(admitted)."""
        prefix = self.store.prefix
        return int(self._prune(keys=[admitted_key(prefix)], args=[f"{prefix}run:"]))


def admission_for(store: RunStore, settings: Settings) -> Admission:
    """The admission queue of ``store`` bounded as ``settings`` say."""
    bounds = Bounds(
        per_slot=settings.admission_per_slot,
        max_in_flight=settings.max_runs_in_flight,
        admitted_per_slot=settings.admitted_per_slot,
    )
    return Admission(store, bounds, slots_ttl=settings.heartbeat_interval)
