"""The waker: one watch per cluster and kind, shared by every run, that wakes waiting steps.

A wait step that finds its objects not there yet registers them in Redis (``workers.waits``) and is
sent again after its polling countdown (1 s growing to 15 s). This component, run by the watcher
process, shortens that: a thread per (cluster, kind a wait can wait for) lists the kind, then watches
it from the list's resourceVersion (informer style: resuming from the last resourceVersion seen after
each watch window, relisting on 410 Gone, backing off with jitter on errors), keeps the last object
seen per name, and hands every added or modified object to :meth:`workers.api.Wakes.on_object`, which
re-sends the message of each run waiting for that object once the object has the role it waits for.

A resync pass every ``resync_interval`` seconds hands the cached objects that runs wait for to the
same check: it catches the event that came between a step's read and its registration, and a run
registered while a watch was down. The step re-reads its objects itself, so a wake is never trusted
beyond "look now"; a lost watch only means the step's polling countdown runs to its end.

It needs list and watch on those kinds (deploy/rbac, the watcher's ClusterRole) and nothing else of
the clusters.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from fsm.kinds import KindError, kind_info
from producers.kube import ClusterClient, Obj, ResourceGone
from workers.api import WATCHED_KINDS, WaitTarget, Wakes
from workers.errors import NotFoundError, OrchestratorError

log = structlog.get_logger(__name__)


@dataclass
class WakerStats:
    """Counters per (cluster, kind), for tests and logs."""

    lists: int = 0
    relists: int = 0
    events: int = 0
    failures: int = 0
    wakes: int = 0


class WaitWaker:
    """Watches ``kinds`` on every cluster of ``connect`` and wakes the runs waiting for the objects.

    Args:
        wakes: the workers' side (:meth:`workers.api.Orchestrator.wakes`).
        clusters: the cluster (kubeconfig context) names.
        connect: a new client for a cluster (one per thread: a client holds one watch at a time).
        watch_timeout: seconds of each watch request; bounds how long a stop can take.
        resync_interval: seconds between two passes over the cached objects runs wait for.
    """

    def __init__(
        self,
        wakes: Wakes,
        clusters: Sequence[str],
        connect: Callable[[str], ClusterClient],
        *,
        kinds: Sequence[str] = WATCHED_KINDS,
        watch_timeout: int = 30,
        resync_interval: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.wakes = wakes
        self.kinds = tuple(kinds)
        self.watch_timeout = watch_timeout
        self.resync_interval = resync_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._random = random.Random()
        self._connect = connect
        self._clusters = tuple(clusters)
        self.stats = {(c, k): WakerStats() for c in self._clusters for k in self.kinds}
        self._clients: dict[tuple[str, str], ClusterClient] = {}
        self._cache: dict[tuple[str, str], dict[str, Obj]] = {key: {} for key in self.stats}
        self._cache_lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> WaitWaker:
        if self._threads:
            return self
        self._stopping.clear()
        for key in self.stats:
            self._clients[key] = self._connect(key[0])
            thread = threading.Thread(target=self._run, args=key, name=f"wake-{key[0]}-{key[1]}", daemon=True)
            self._threads.append(thread)
        resync = threading.Thread(target=self._run_resync, name="wake-resync", daemon=True)
        self._threads.append(resync)
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        deadline = time.monotonic() + timeout
        threads, self._threads = self._threads, []
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            for client in self._clients.values():
                client.stop_watch()
            for thread in threads:
                thread.join(0.05)
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def __enter__(self) -> WaitWaker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- one (cluster, kind) -------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return float(ceiling / 2 + self._random.uniform(0, ceiling / 2))

    def _run(self, cluster: str, kind: str) -> None:
        key, resource_version, attempt = (cluster, kind), None, 0
        client, stats = self._clients[key], self.stats[key]
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list(cluster, kind, client)
                resource_version = self._watch(cluster, kind, client, resource_version)
                attempt = 0
            except ResourceGone:
                stats.relists += 1
                resource_version = None  # the watch's history is gone: list again
            except Exception as error:
                attempt += 1
                stats.failures += 1
                delay = self._backoff(attempt)
                detail = error.describe() if isinstance(error, OrchestratorError) else repr(error)
                # Said once per outage; a kind the cluster does not serve (no Istio, no Flux) or may not
                # be listed cluster-wide (deploy/rbac-namespaced) is looked at again, quietly.
                quiet = attempt > 1 or isinstance(error, NotFoundError)
                level = log.debug if quiet else log.warning
                level("waker.watch_failed", cluster=cluster, kind=kind, attempt=attempt, error=detail)
                self._stopping.wait(delay)

    def _list(self, cluster: str, kind: str, client: ClusterClient) -> str:
        items, resource_version = client.list(kind_info(kind))
        self.stats[(cluster, kind)].lists += 1
        with self._cache_lock:
            self._cache[(cluster, kind)] = {_name(obj): obj for obj in items}
        for obj in items:
            self._seen(cluster, kind, obj)
        return resource_version

    def _watch(self, cluster: str, kind: str, client: ClusterClient, resource_version: str) -> str:
        resource = kind_info(kind)
        for event in client.watch(resource, resource_version, timeout_seconds=self.watch_timeout):
            if self._stopping.is_set():
                break
            obj = event.get("object") or {}
            kind_of_event = event.get("type")
            if kind_of_event in ("ADDED", "MODIFIED"):
                self.stats[(cluster, kind)].events += 1
                with self._cache_lock:
                    self._cache[(cluster, kind)][_name(obj)] = obj
                self._seen(cluster, kind, obj)
            elif kind_of_event == "DELETED":
                with self._cache_lock:
                    self._cache[(cluster, kind)].pop(_name(obj), None)
            resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        return resource_version

    def _seen(self, cluster: str, kind: str, obj: Obj) -> None:
        """Hand one object to the wake decision; a failure here (Redis, the broker) is logged, never
        fatal: the runs it would have woken are polled."""
        try:
            woken = self.wakes.on_object(cluster, kind, obj, at=self._clock(), lookup=self.cached)
        except OrchestratorError as error:
            log.warning("waker.wake_failed", cluster=cluster, kind=kind, error=error.describe())
            return
        except KindError:
            return
        self.stats[(cluster, kind)].wakes += len(woken)

    def cached(self, target: WaitTarget) -> Obj | None:
        """The object as last listed or watched (None: not seen, or its kind not watched here)."""
        with self._cache_lock:
            return self._cache.get((target.cluster, target.kind), {}).get(target.object_key)

    # --- resync --------------------------------------------------------------------------------------

    def _run_resync(self) -> None:
        while not self._stopping.wait(self.resync_interval):
            for cluster, kind in self.stats:
                try:
                    self.resync(cluster, kind)
                except OrchestratorError as error:
                    log.warning("waker.resync_failed", cluster=cluster, kind=kind, error=error.describe())

    def resync(self, cluster: str, kind: str) -> int:
        """Check every cached object of ``kind`` on ``cluster`` that some run waits for; the number of
        runs woken."""
        targets = self.wakes.registry.registered(cluster, kind)
        with self._cache_lock:
            cache: Mapping[str, Obj] = dict(self._cache[(cluster, kind)])
        woken = 0
        for target in targets:
            obj = cache.get(target.object_key)
            if obj is not None:
                found = self.wakes.on_object(cluster, kind, obj, at=self._clock(), lookup=self.cached)
                woken += len(found)
        self.stats[(cluster, kind)].wakes += woken
        return woken


def _name(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
