"""Simulated controllers of one sandbox cluster, in one background thread with adjustable delays.

Driven by the store's change events, like real controllers by their informers: a change puts the
object's key in a work queue (deduplicated), a delay asks for a delayed requeue of that key, so with
nothing changing and nothing due the thread sleeps (see base.py). ``full_passes=True`` keeps the old
behaviour, a pass over every object every ``tick`` (the baseline of tests/benchmarks/bench_sandbox.py);
:meth:`Controllers.run_once` is one such pass in either mode. In event mode ``tick`` is the pause
between two batches of queued keys (a key changed several times within it is handled once).

* Deployments/StatefulSets: ``status.observedGeneration`` catches up ``workload_delay`` seconds after a
  spec change (its own write, as the real controllers do), then the replica counters move toward
  ``spec.replicas`` one replica per ``replica_step`` seconds (all at once when 0). Zero counters are
  omitted where the real API omits them (``omitempty``).
* VolumeReplications (csi-addons): after ``volume_delay`` the state becomes ``Primary``/``Secondary`` with
  the operator's condition sets; a demotion is ``Degraded=True/VolumeDegraded`` with a resync until
  ``volume_resync_delay`` later it settles ``Degraded=False/Healthy``. ``volume_faults[name]`` =
  ``"degraded"`` (never settles), ``"stuck"`` (never acts) or ``"fail"`` (FailedToPromote/Demote).
* Flux HelmRelease/Kustomization: unless suspended, a new generation or a new
  ``reconcile.fluxcd.io/requestedAt`` makes ``Ready=Unknown/Progressing`` then, ``flux_delay`` later,
  ``Ready=True`` with ``lastHandledReconcileAt``; ``flux_faults[name]`` = ``"fail"`` or ``"stuck"``.
* CronJobs/Jobs: :meth:`Controllers.start_job` starts a running Job owned by a CronJob (listed in
  ``status.active``); Jobs complete after ``job_duration`` seconds (never when None); finished or deleted
  Jobs leave ``status.active``; ``cronjob_interval`` starts Jobs periodically; suspended CronJobs start none.

Every status write carries the resourceVersion it was computed from, so a concurrent client write makes
it fail with 409 and the object is looked at again: controllers never clobber clients. This package
must not serve HTTP or bypass the store's rules.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sandbox.kube.controllers.base import ControllerBase, Key, find_condition, set_condition
from sandbox.kube.controllers.flux import FLUX, FluxController
from sandbox.kube.controllers.jobs import CRONJOBS, JOBS, JobController
from sandbox.kube.controllers.volumes import VOLUMES, VolumeController
from sandbox.kube.controllers.workloads import DEPLOYMENTS, STATEFULSETS, WorkloadController
from sandbox.kube.store import Body

log = logging.getLogger(__name__)

__all__ = ["ControllerBase", "Controllers", "find_condition", "set_condition"]


class Controllers(WorkloadController, VolumeController, FluxController, JobController):
    """The controller loop of one cluster; every attribute is a knob that may change at run time.

    Knobs: ``tick``, ``workload_delay``, ``replica_step``, ``volume_delay``, ``volume_resync_delay``,
    ``flux_delay``, ``job_duration``, ``cronjob_interval``, ``paused``, ``volume_faults``,
    ``flux_faults``; helper: :meth:`start_job`.
    """

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            if not self.full_passes:
                self._unsubscribe = self.store.subscribe(self._on_change)
                self.resync()  # the informer's initial list: every object is looked at once
            target = self._pass_loop if self.full_passes else self._event_loop
            self._thread = threading.Thread(target=target, name="sandbox-controllers", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _pass_loop(self) -> None:
        while not self._stop.wait(self.tick):
            if self.paused:
                continue
            try:
                self.run_once()
            except Exception:  # a controller bug must not kill the loop (or leak a thread exception)
                log.exception("sandbox controller pass failed")

    def _event_loop(self) -> None:
        while not self._stop.is_set():
            keys = self._take(timeout=1.0)
            if not keys:
                continue
            with self._lock:
                for key in keys:
                    self.handled += 1
                    try:
                        again = self._reconcile(key)
                    except Exception:  # a controller bug must not kill the loop; retried later
                        log.exception("sandbox controller failed on %s", key)
                        again = 1.0
                    if again is not None:
                        self._requeue(key, again)
            self._stop.wait(self.tick)  # changes made meanwhile are batched (and deduplicated)

    def _watched_kinds(self) -> tuple[str, ...]:
        return (DEPLOYMENTS, STATEFULSETS, VOLUMES, *FLUX, JOBS, CRONJOBS)

    def _reconcile(self, key: Key) -> float | None:
        """Look at one object; the seconds until it must be looked at again (None: on its next change)."""
        kind, namespace, name = key
        obj = self.store.find(kind, namespace or None, name)
        if obj is None:
            return None
        handlers: dict[str, Callable[[Body], float | None]] = {
            DEPLOYMENTS: lambda o: self._workload(DEPLOYMENTS, o),
            STATEFULSETS: lambda o: self._workload(STATEFULSETS, o),
            VOLUMES: self._volume,
            JOBS: self._job,
            CRONJOBS: lambda o: self._cronjob(o, lambda ns, n: self.store.find(JOBS, ns, n)),
            **{flux: (lambda o, flux=flux: self._flux_one(flux, o)) for flux in FLUX},
        }
        return handlers[kind](obj)

    def run_once(self) -> None:
        """One pass over every object of every controller (``full_passes`` mode: every ``tick``)."""
        with self._lock:
            self._workloads()
            self._volumes()
            self._flux()
            self._jobs()
