"""Shared plumbing of the simulated controllers: knobs, delays, the work queue, optimistic status
writes, conditions.

The work queue is what a real controller builds from an informer: the store's change events put the
key ``(kind key, namespace, name)`` of every changed object in a set of dirty keys (a key changed ten
times before it is handled is handled once); a handler that must look again later (a delay not yet
over, the next replica step) asks for a delayed requeue of that key, kept in a heap of due times.
Nothing is looked at when nothing changes and nothing is due. Changing a knob (a delay, a fault) at run
time looks at every object once more, as an informer's resync would.

Every status write carries the resourceVersion it was computed from, so a concurrent client write makes
it fail with 409 and, that write being a change too, the object is looked at again: controllers never
clobber clients. This module must not hold any kind-specific logic.
"""

from __future__ import annotations

import copy
import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox.kube.errors import ApiError
from sandbox.kube.store import Body, ObjectStore, utcnow

Key = tuple[str, str, str]  # (kind key, namespace, name)
# Knobs whose change makes every object be looked at again (a resync); ``paused`` only wakes the loop.
RESYNC_KNOBS = frozenset(
    {
        "workload_delay",
        "replica_step",
        "volume_delay",
        "volume_resync_delay",
        "flux_delay",
        "job_duration",
        "cronjob_interval",
        "volume_faults",
        "flux_faults",
    }
)


class WatchedDict(dict[str, str]):
    """A dict of faults that calls ``changed()`` after every change (so a cleared fault acts at once)."""

    def __init__(self, initial: dict[str, str], changed: Callable[[], None]) -> None:
        super().__init__(initial)
        self._changed = changed

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed()
        return value

    def clear(self) -> None:
        super().clear()
        self._changed()

    def setdefault(self, key: str, default: str = "") -> str:
        value = super().setdefault(key, default)
        self._changed()
        return value


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
) -> None:
    """Upsert a condition; lastTransitionTime changes only when status flips (as meta.SetStatusCondition)."""
    new: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": utcnow(),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    for existing in conditions:
        if existing.get("type") == type_:
            if existing.get("status") == status:
                new["lastTransitionTime"] = existing.get("lastTransitionTime", new["lastTransitionTime"])
            existing.clear()
            existing.update(new)
            return
    conditions.append(new)


def find_condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


class ControllerBase:
    """Knobs and state shared by the controllers; every attribute may change at run time."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        tick: float = 0.02,
        workload_delay: float = 0.2,
        replica_step: float = 0.05,
        volume_delay: float = 0.2,
        volume_resync_delay: float = 0.3,
        flux_delay: float = 0.2,
        job_duration: float | None = 1.0,
        cronjob_interval: float | None = None,
        full_passes: bool = False,
    ) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._dirty: dict[Key, None] = {}  # an ordered set
        self._delayed: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self.store = store
        self.full_passes = full_passes
        self.handled = 0  # keys handled by the event loop so far
        self.tick = tick
        self.workload_delay = workload_delay
        self.replica_step = replica_step
        self.volume_delay = volume_delay
        self.volume_resync_delay = volume_resync_delay
        self.flux_delay = flux_delay
        self.job_duration = job_duration
        self.cronjob_interval = cronjob_interval
        self.paused = False
        self.volume_faults: dict[str, str] = WatchedDict({}, self.resync)
        self.flux_faults: dict[str, str] = WatchedDict({}, self.resync)
        self._first_seen: dict[tuple[Any, ...], float] = {}
        self._last_step: dict[tuple[str, str, str], float] = {}
        self._templates: dict[tuple[str, str, str], str] = {}
        self._last_auto_job: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("volume_faults", "flux_faults") and not isinstance(value, WatchedDict):
            value = WatchedDict(dict(value), self.resync)
        super().__setattr__(name, value)
        if "_unsubscribe" not in self.__dict__:
            return  # still in __init__
        if name in RESYNC_KNOBS:
            self.resync()
        elif name == "paused":
            with self._wake:
                self._wake.notify_all()

    # --- the work queue -------------------------------------------------------------------------

    def _watched_kinds(self) -> tuple[str, ...]:
        """The kind keys the controllers handle (the subclass that mixes them all in says which)."""
        return ()

    def _on_change(self, type_: str, kind: str, namespace: str, name: str, obj: Body) -> None:
        """The store's listener (inside its lock): mark the key dirty, and the keys it affects."""
        if kind not in self._watched_kinds():
            return
        keys = [(kind, namespace, name), *self._affected(kind, obj)]
        with self._wake:
            for key in keys:
                self._dirty[key] = None
            self._wake.notify_all()

    def _affected(self, kind: str, obj: Body) -> list[Key]:
        """Other keys a change of ``obj`` concerns (a Job's CronJob); none by default."""
        return []

    def resync(self) -> None:
        """Look at every object of the handled kinds once more (after a knob changed)."""
        if self._unsubscribe is None:
            return  # not running: run_once() passes look at everything anyway
        keys = [(kind, ns, name) for kind in self._watched_kinds() for ns, name in self.store.keys(kind)]
        with self._wake:
            for key in keys:
                self._dirty[key] = None
            self._wake.notify_all()

    def _requeue(self, key: Key, delay: float) -> None:
        """Look at ``key`` again in ``delay`` seconds (the earliest asked for wins)."""
        due = time.monotonic() + max(0.0, delay)
        with self._wake:
            if self._delayed.get(key, float("inf")) <= due:
                return
            self._delayed[key] = due
            heapq.heappush(self._heap, (due, key))

    def _take(self, timeout: float) -> list[Key]:
        """The dirty keys and those now due, waiting up to ``timeout`` for one (none while paused)."""
        with self._wake:
            if not self._ready() and not self._stop.is_set():
                wait = timeout
                if self._heap and not self.paused:
                    wait = min(wait, max(0.0, self._heap[0][0] - time.monotonic()))
                self._wake.wait(wait)
            if not self._ready():
                return []
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                due, key = heapq.heappop(self._heap)
                if self._delayed.get(key) == due:
                    del self._delayed[key]
                    self._dirty[key] = None
            keys = list(self._dirty)
            self._dirty.clear()
            return keys

    def _ready(self) -> bool:
        """Whether there is work now (called holding ``_wake``)."""
        if self.paused:
            return False
        return bool(self._dirty) or bool(self._heap and self._heap[0][0] <= time.monotonic())

    @property
    def pending(self) -> int:
        """Keys changed and not handled yet (for tests and benchmarks)."""
        with self._wake:
            return len(self._dirty)

    @property
    def delayed(self) -> int:
        """Keys to be looked at again later (a delay not over yet)."""
        with self._wake:
            return len(self._delayed)

    # --- helpers for the handlers ---------------------------------------------------------------

    def _remaining(self, key: tuple[Any, ...], delay: float) -> float:
        """Seconds until ``delay`` has passed since ``key`` was first looked at (<= 0: it has)."""
        first = self._first_seen.setdefault(key, time.monotonic())
        return delay - (time.monotonic() - first)

    def _due(self, key: tuple[Any, ...], delay: float) -> bool:
        return self._remaining(key, delay) <= 0

    def _write_status(self, kind: str, obj: Body, status: dict[str, Any]) -> bool:
        """Write ``status`` conditioned on the resourceVersion ``obj`` was read at; False on 409/404."""
        body = copy.deepcopy(obj)
        body["status"] = status
        meta = obj["metadata"]
        try:
            self.store.update(kind, meta.get("namespace"), meta["name"], body, subresource="status")
        except ApiError as exc:
            if exc.code in (404, 409):
                return False
            raise
        return True

    def _list(self, kind: str) -> list[Body]:
        try:
            return self.store.list(kind)[0]
        except ApiError:  # the CRD is not installed (or was deleted)
            return []

    @staticmethod
    def _fault(faults: dict[str, str], obj: Body) -> str | None:
        meta = obj["metadata"]
        return faults.get(f"{meta.get('namespace')}/{meta['name']}") or faults.get(meta["name"])
