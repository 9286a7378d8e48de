"""Simulated controllers of one sandbox cluster, in one background thread with adjustable delays.

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
it fail with 409 and it is recomputed on the next tick: controllers never clobber clients. This package
must not serve HTTP or bypass the store's rules.
"""

from __future__ import annotations

import logging
import threading

from sandbox.kube.controllers.base import ControllerBase, find_condition, set_condition
from sandbox.kube.controllers.flux import FluxController
from sandbox.kube.controllers.jobs import JobController
from sandbox.kube.controllers.volumes import VolumeController
from sandbox.kube.controllers.workloads import WorkloadController

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
            self._thread = threading.Thread(target=self._loop, name="sandbox-controllers", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            if self.paused:
                continue
            try:
                self.run_once()
            except Exception:  # a controller bug must not kill the loop (or leak a thread exception)
                log.exception("sandbox controller pass failed")

    def run_once(self) -> None:
        """One pass of every controller (the loop calls this every ``tick`` seconds)."""
        with self._lock:
            self._workloads()
            self._volumes()
            self._flux()
            self._jobs()
