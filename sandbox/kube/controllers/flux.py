"""Flux HelmRelease and Kustomization controllers.

Unless ``spec.suspend``, a new generation (resuming is one) or a new ``reconcile.fluxcd.io/requestedAt``
annotation makes ``Ready=Unknown/Progressing`` then, ``flux_delay`` later, ``Ready=True`` with
``status.lastHandledReconcileAt`` set to the annotation. Suspended objects keep their Ready condition.
``flux_faults[name or "ns/name"]``: ``"fail"`` (Ready=False) or ``"stuck"``. This module must not
touch other kinds.
"""

from __future__ import annotations

import copy

from sandbox.kube.controllers.base import ControllerBase, find_condition, set_condition
from sandbox.kube.store import Body

FLUX = ("helmreleases.helm.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io")
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


class FluxController(ControllerBase):
    """Flux HelmRelease and Kustomization controllers."""

    def _flux(self) -> None:
        for kind in FLUX:
            for obj in self._list(kind):
                self._flux_one(kind, obj)

    def _flux_one(self, kind: str, obj: Body) -> float | None:
        """Move one Flux object's status on; the seconds until it must be looked at again, if ever."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        if spec.get("suspend"):
            return None  # a suspended object is not reconciled: Ready stays as it was
        fault = self._fault(self.flux_faults, obj)
        generation = meta.get("generation", 1)
        requested = (meta.get("annotations") or {}).get(REQUESTED_AT)
        status = copy.deepcopy(obj.get("status") or {})
        pending = status.get("observedGeneration") != generation or (
            requested is not None and requested != status.get("lastHandledReconcileAt")
        )
        if not pending or fault == "stuck":
            return None
        conditions = status.setdefault("conditions", [])
        key = (kind, meta["namespace"], meta["name"], generation, requested)
        ready = find_condition(status, "Ready")
        remaining = self._remaining(key, self.flux_delay)
        if remaining > 0:
            if not (ready and ready.get("status") == "Unknown"):
                set_condition(
                    conditions,
                    "Reconciling",
                    "True",
                    "Progressing",
                    "Reconciliation in progress",
                    generation=generation,
                )
                set_condition(
                    conditions,
                    "Ready",
                    "Unknown",
                    "Progressing",
                    "Reconciliation in progress",
                    generation=generation,
                )
                self._write_status(kind, obj, status)
            return remaining
        helm = kind.startswith("helmreleases")
        if fault == "fail":
            set_condition(
                conditions,
                "Ready",
                "False",
                "UpgradeFailed" if helm else "ReconciliationFailed",
                "injected failure",
                generation=generation,
            )
        else:
            message = (
                f"Helm upgrade succeeded for release {meta['namespace']}/{meta['name']}.v{generation}"
                if helm
                else f"Applied revision: main@sha1:{generation:040x}"
            )
            set_condition(
                conditions,
                "Ready",
                "True",
                "UpgradeSucceeded" if helm else "ReconciliationSucceeded",
                message,
                generation=generation,
            )
            if not helm:
                status["lastAppliedRevision"] = f"main@sha1:{generation:040x}"
        status["conditions"] = [c for c in conditions if c.get("type") != "Reconciling"]
        status["observedGeneration"] = generation
        if helm:
            status["lastAttemptedGeneration"] = generation
        if requested is not None:
            status["lastHandledReconcileAt"] = requested
        self._write_status(kind, obj, status)
        return None
