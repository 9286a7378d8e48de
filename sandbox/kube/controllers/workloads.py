"""Deployment and StatefulSet controllers.

``status.observedGeneration`` catches up ``workload_delay`` seconds after a spec change (its own write,
as the real controllers do), then the replica counters move toward ``spec.replicas`` one replica per
``replica_step`` seconds (all at once when 0); a new pod template restarts ``updatedReplicas`` from 0.
Zero counters are omitted where the real API omits them (``omitempty``). No Pods are created. This
module must not touch other kinds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from typing import Any

from sandbox.kube.controllers.base import ControllerBase, set_condition
from sandbox.kube.store import Body, utcnow

DEPLOYMENTS, STATEFULSETS = "deployments.apps", "statefulsets.apps"


class WorkloadController(ControllerBase):
    """Deployment and StatefulSet controllers."""

    def _workloads(self) -> None:
        for kind in (DEPLOYMENTS, STATEFULSETS):
            for obj in self._list(kind):
                self._workload(kind, obj)

    def _workload(self, kind: str, obj: Body) -> float | None:
        """Move one workload's status on; the seconds until it must be looked at again, if ever."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        status = copy.deepcopy(obj.get("status") or {})
        key = (kind, meta["namespace"], meta["name"])
        generation, want = meta.get("generation", 1), int(spec.get("replicas", 1))
        template = hashlib.sha256(json.dumps(spec.get("template"), sort_keys=True).encode()).hexdigest()[:10]
        previous = self._templates.setdefault(key, template)
        if status.get("observedGeneration") != generation:
            remaining = self._remaining((key, "observe", generation), self.workload_delay)
            if remaining > 0:
                return remaining
            status["observedGeneration"] = generation
            if previous != template:
                status["updatedReplicas"] = 0  # a new template: a rollout starts from zero updated pods
            if self._write_status(kind, obj, self._shape(kind, obj, status, template)):
                self._templates[key] = template
                self._last_step[key] = time.monotonic()
            return None  # the write (or the one that made it fail) is a change: it comes back
        fields: tuple[str, ...] = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
        if kind == STATEFULSETS:
            fields += ("currentReplicas",)
        if all(int(status.get(f, 0)) == want for f in fields):
            return None
        wait = self.replica_step - (time.monotonic() - self._last_step.get(key, 0.0))
        if wait > 0:
            return wait
        for f in fields:
            value = int(status.get(f, 0))
            if self.replica_step > 0:
                status[f] = value + (1 if want > value else -1 if want < value else 0)
            else:
                status[f] = want
        if self._write_status(kind, obj, self._shape(kind, obj, status, template)):
            self._last_step[key] = time.monotonic()
        return None

    @staticmethod
    def _shape(kind: str, obj: Body, status: dict[str, Any], template: str) -> dict[str, Any]:
        """Conditions, revisions and omitempty rules of the real status types."""
        name, want = obj["metadata"]["name"], int((obj.get("spec") or {}).get("replicas", 1))
        counters = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "currentReplicas")
        done = all(int(status.get(f, 0)) == want for f in counters[:4])
        if kind == DEPLOYMENTS:
            status.pop("currentReplicas", None)
            available = int(status.get("availableReplicas", 0))
            status["unavailableReplicas"] = max(0, want - available)
            conditions = status.setdefault("conditions", [])
            ok = available >= want - want // 4
            set_condition(
                conditions,
                "Available",
                "True" if ok else "False",
                "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if ok
                else "Deployment does not have minimum availability.",
            )
            set_condition(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                f'ReplicaSet "{name}-{template}" has successfully progressed.'
                if done
                else f'ReplicaSet "{name}-{template}" is progressing.',
            )
            for condition in conditions:
                condition["lastUpdateTime"] = utcnow()
            omit: tuple[str, ...] = (*counters[:4], "unavailableReplicas")
        else:
            status["updateRevision"] = f"{name}-{template}"
            if done:
                status["currentRevision"] = status["updateRevision"]
            status.setdefault("replicas", 0)
            status.setdefault("availableReplicas", 0)
            omit = ("readyReplicas", "currentReplicas", "updatedReplicas")
        for f in omit:
            if status.get(f) == 0:
                del status[f]
        return status
