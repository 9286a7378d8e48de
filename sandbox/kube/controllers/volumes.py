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
from sandbox.kube.store import utcnow

VOLUMES = "volumereplications.replication.storage.openshift.io"


class VolumeController(ControllerBase):
    """VolumeReplication controller, following the csi-addons operator's status updates."""

    def _volumes(self) -> None:
        for obj in self._list(VOLUMES):
            meta = obj["metadata"]
            fault = self._fault(self.volume_faults, obj)
            if fault == "stuck":
                continue
            generation = meta.get("generation", 1)
            desired = str((obj.get("spec") or {}).get("replicationState", "")).lower()
            status = copy.deepcopy(obj.get("status") or {})
            conditions = status.setdefault("conditions", [])
            key = (VOLUMES, meta["namespace"], meta["name"], generation)
            if status.get("observedGeneration") != generation:
                if not self._due(key, self.volume_delay):
                    continue
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
                    set_condition(
                        conditions, "Resyncing", "True", "ResyncTriggered", "", generation=generation
                    )
                    status.update(state="Secondary", message="volume is marked secondary")
                self._write_status(VOLUMES, obj, status)
                continue
            degraded = find_condition(status, "Degraded")
            resyncing = (
                desired in ("secondary", "resync") and degraded and degraded.get("reason") == "VolumeDegraded"
            )
            if resyncing and fault is None and self._due((*key, "resync"), self.volume_resync_delay):
                set_condition(conditions, "Degraded", "False", "Healthy", "", generation=generation)
                set_condition(conditions, "Resyncing", "False", "NotResyncing", "", generation=generation)
                status["lastCompletionTime"] = utcnow()
                self._write_status(VOLUMES, obj, status)
