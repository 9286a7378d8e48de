"""Shared plumbing of the simulated controllers: knobs, delays, optimistic status writes, conditions.

Every status write carries the resourceVersion it was computed from, so a concurrent client write makes
it fail with 409 and it is recomputed on the next tick: controllers never clobber clients. This module
must not hold any kind-specific logic.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from sandbox.kube.errors import ApiError
from sandbox.kube.store import Body, ObjectStore, utcnow


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
    ) -> None:
        self.store = store
        self.tick = tick
        self.workload_delay = workload_delay
        self.replica_step = replica_step
        self.volume_delay = volume_delay
        self.volume_resync_delay = volume_resync_delay
        self.flux_delay = flux_delay
        self.job_duration = job_duration
        self.cronjob_interval = cronjob_interval
        self.paused = False
        self.volume_faults: dict[str, str] = {}
        self.flux_faults: dict[str, str] = {}
        self._first_seen: dict[tuple[Any, ...], float] = {}
        self._last_step: dict[tuple[str, str, str], float] = {}
        self._templates: dict[tuple[str, str, str], str] = {}
        self._last_auto_job: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _due(self, key: tuple[Any, ...], delay: float) -> bool:
        first = self._first_seen.setdefault(key, time.monotonic())
        return time.monotonic() - first >= delay

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
