"""VolumeReplication controller, following the csi-addons operator's status updates.

After ``volume_delay`` the state becomes ``Primary``/``Secondary`` (capitalised, as the operator reports)
with the operator's condition sets; a demotion (or resync) is ``Completed=True/Demoted`` with
``Degraded=True/VolumeDegraded`` and ``Resyncing=True`` until, ``volume_resync_delay`` later, it settles
``Degraded=False/Healthy``. ``volume_faults[name or "ns/name"]``: ``"degraded"`` (never settles),
``"stuck"`` (never acts) or ``"fail"`` (FailedToPromote/FailedToDemote). This module must not touch
other kinds.
"""

from __future__ import annotations

import copy

from sandbox.kube.controllers.base import ControllerBase, find_condition, set_condition
from sandbox.kube.store import Body, utcnow

VOLUMES = "volumereplications.replication.storage.openshift.io"


class VolumeController(ControllerBase):
    """VolumeReplication controller, following the csi-addons operator's status updates."""

    def _volumes(self) -> None:
        for obj in self._list(VOLUMES):
            self._volume(obj)

    def _volume(self, obj: Body) -> float | None:
        """Move one volume's status on; the seconds until it must be looked at again, if ever."""
        meta = obj["metadata"]
        fault = self._fault(self.volume_faults, obj)
        if fault == "stuck":
            return None
        generation = meta.get("generation", 1)
        desired = str((obj.get("spec") or {}).get("replicationState", "")).lower()
        status = copy.deepcopy(obj.get("status") or {})
        conditions = status.setdefault("conditions", [])
        key = (VOLUMES, meta["namespace"], meta["name"], generation)
        if status.get("observedGeneration") != generation:
            remaining = self._remaining(key, self.volume_delay)
            if remaining > 0:
                return remaining
            status["observedGeneration"] = generation
            status["lastStartTime"] = utcnow()
            promote = desired == "primary"
            if fault == "fail":
                set_condition(
                    conditions,
                    "Completed",
                    "False",
                    "FailedToPromote" if promote else "FailedToDemote",
                    "",
                    generation=generation,
                )
                set_condition(conditions, "Degraded", "True", "Error", "", generation=generation)
                set_condition(conditions, "Resyncing", "False", "NotResyncing", "", generation=generation)
                status["message"] = f"failed to {'promote' if promote else 'demote'} volume"
                status.setdefault("state", "Unknown")
            elif promote:
                set_condition(conditions, "Completed", "True", "Promoted", "", generation=generation)
                set_condition(
                    conditions,
                    "Degraded",
                    "True" if fault == "degraded" else "False",
                    "VolumeDegraded" if fault == "degraded" else "Healthy",
                    "",
                    generation=generation,
                )
                set_condition(conditions, "Resyncing", "False", "NotResyncing", "", generation=generation)
                status.update(
                    state="Primary", message="volume is marked primary", lastCompletionTime=utcnow()
                )
            else:  # secondary and resync: demoted, degraded while the resync runs
                set_condition(conditions, "Completed", "True", "Demoted", "", generation=generation)
                set_condition(conditions, "Degraded", "True", "VolumeDegraded", "", generation=generation)
                set_condition(conditions, "Resyncing", "True", "ResyncTriggered", "", generation=generation)
                status.update(state="Secondary", message="volume is marked secondary")
            self._write_status(VOLUMES, obj, status)
            return None
        degraded = find_condition(status, "Degraded")
        resyncing = (
            desired in ("secondary", "resync") and degraded and degraded.get("reason") == "VolumeDegraded"
        )
        if not resyncing or fault is not None:
            return None
        remaining = self._remaining((*key, "resync"), self.volume_resync_delay)
        if remaining > 0:
            return remaining
        set_condition(conditions, "Degraded", "False", "Healthy", "", generation=generation)
        set_condition(conditions, "Resyncing", "False", "NotResyncing", "", generation=generation)
        status["lastCompletionTime"] = utcnow()
        self._write_status(VOLUMES, obj, status)
        return None
