"""What "active" and "passive" mean for each kind (docs/API.md's table), as pure functions on object dicts.

Pure: every function here takes an object as the API server returned it (a plain dict, camelCase keys)
and computes either the merge patch that moves it to a role, or whether its ``status`` says it got
there. It reads no cluster, no clock and no environment; ``workers.kube`` does the I/O, adds the
``resourceVersion`` precondition and the epoch annotation to every patch, and retries on conflicts.

An edit function returns ``None`` when the object is already in the wanted form, which is what makes
every effect idempotent: a second call changes nothing and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsm.models import ANNOTATION_REPLICAS
from workers.errors import PermanentError
from workers.ports import Role

Obj = dict[str, Any]

ANNOTATION_FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"
ANNOTATION_DNS_CONTROLLER = "external-dns.alpha.kubernetes.io/controller"
ANNOTATION_REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
DNS_VALUE = {Role.ACTIVE: "dns-controller", Role.PASSIVE: "ignore"}

WORKLOADS = frozenset({"Deployment", "StatefulSet"})
NETWORK = frozenset({"Ingress", "VirtualService"})
FLUX = frozenset({"HelmRelease", "Kustomization"})
CRON_JOB = "CronJob"
VOLUME_REPLICATION = "VolumeReplication"


@dataclass(frozen=True)
class KindInfo:
    """Where a kind is served: its API group, the versions we speak (preferred first), its plural."""

    kind: str
    group: str
    versions: tuple[str, ...]
    plural: str


KINDS: dict[str, KindInfo] = {
    info.kind: info
    for info in (
        KindInfo("Deployment", "apps", ("v1",), "deployments"),
        KindInfo("StatefulSet", "apps", ("v1",), "statefulsets"),
        KindInfo("CronJob", "batch", ("v1",), "cronjobs"),
        KindInfo("Ingress", "networking.k8s.io", ("v1",), "ingresses"),
        # Istio serves v1 since 1.22; older installations only v1beta1 (chosen through discovery).
        KindInfo("VirtualService", "networking.istio.io", ("v1", "v1beta1"), "virtualservices"),
        KindInfo("HelmRelease", "helm.toolkit.fluxcd.io", ("v2",), "helmreleases"),
        KindInfo("Kustomization", "kustomize.toolkit.fluxcd.io", ("v1",), "kustomizations"),
        KindInfo(VOLUME_REPLICATION, "replication.storage.openshift.io", ("v1alpha1",), "volumereplications"),
    )
}
JOBS = KindInfo("Job", "batch", ("v1",), "jobs")


def _unmanaged(kind: str) -> PermanentError:
    return PermanentError(f"kind {kind!r} is not one the orchestrator manages ({', '.join(sorted(KINDS))})")


def kind_info(kind: str) -> KindInfo:
    info = KINDS.get(kind)
    if info is None:
        raise _unmanaged(kind)
    return info


@dataclass(frozen=True)
class Edit:
    """A merge patch that moves an object to a role, and in words what it changes."""

    patch: Obj
    detail: str


# --- reading dicts ---------------------------------------------------------------------------------


def _section(obj: Obj, name: str) -> Obj:
    value = obj.get(name)
    return value if isinstance(value, dict) else {}


def annotations_of(obj: Obj) -> dict[str, str]:
    value = _section(obj, "metadata").get("annotations")
    return value if isinstance(value, dict) else {}


def _int(value: object, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return default


def _count(text: str | None) -> int | None:
    """A replica count from an annotation value; None when absent or not a whole number."""
    if text is None or not text.strip().isdigit():
        return None
    return int(text)


def condition(obj: Obj, type_: str) -> Obj | None:
    for item in _section(obj, "status").get("conditions") or []:
        if isinstance(item, dict) and item.get("type") == type_:
            return item
    return None


def _describe(cond: Obj | None, type_: str) -> str:
    if cond is None:
        return f"no {type_} condition"
    text = f"{type_}={cond.get('status')}"
    if cond.get("reason"):
        text += f" ({cond['reason']})"
    if cond.get("message"):
        text += f": {cond['message']}"
    return text


def _caught_up(obj: Obj) -> tuple[bool, str]:
    """Whether the controller has seen the latest spec (``status.observedGeneration`` >= generation)."""
    generation = _int(_section(obj, "metadata").get("generation"), 1)
    observed = _section(obj, "status").get("observedGeneration")
    if observed is None or _int(observed, -1) < generation:
        return False, f"observedGeneration {observed} behind generation {generation}"
    return True, ""


def _patch(spec: Obj | None = None, notes: dict[str, str | None] | None = None) -> Obj:
    patch: Obj = {}
    if notes:
        patch["metadata"] = {"annotations": notes}
    if spec:
        patch["spec"] = spec
    return patch


def _suspended(obj: Obj) -> bool:
    return _section(obj, "spec").get("suspend") is True


# --- edits ---------------------------------------------------------------------------------------


def passive_edit(kind: str, obj: Obj) -> Edit | None:
    """The merge patch that makes ``obj`` passive, or None when it already is. Pure."""
    spec, notes = _section(obj, "spec"), annotations_of(obj)
    if kind in WORKLOADS:
        replicas = _int(spec.get("replicas"), 1)
        spec_patch: Obj = {}
        note_patch: dict[str, str | None] = {}
        changes = []
        if replicas > 0:
            spec_patch["replicas"] = 0
            note_patch[ANNOTATION_REPLICAS] = str(replicas)
            changes.append(f"replicas {replicas} -> 0 (remembered {replicas})")
        if notes.get(ANNOTATION_FLUX_RECONCILE) != "disabled":
            note_patch[ANNOTATION_FLUX_RECONCILE] = "disabled"
            changes.append("Flux reconcile disabled")
        return Edit(_patch(spec_patch, note_patch), ", ".join(changes)) if changes else None
    if kind == CRON_JOB or kind in FLUX:
        return None if _suspended(obj) else Edit(_patch({"suspend": True}), "suspend false -> true")
    if kind in NETWORK:
        return _dns_edit(notes, Role.PASSIVE)
    if kind == VOLUME_REPLICATION:
        return _replication_edit(spec, "secondary")
    raise _unmanaged(kind)


def active_edit(
    kind: str, obj: Obj, *, replicas: int | None = None, requested_at: str | None = None
) -> Edit | None:
    """The merge patch that makes ``obj`` active, or None when it already is. Pure.

    Workloads at 0 go back to the count remembered in ``failover.hahomelabs.com/replicas``, else to
    ``replicas`` (the source's count recorded in the plan); with neither, a :class:`PermanentError`.
    A workload already running (replicas > 0) keeps its count: an autoscaler or a person may have
    changed it since the count was remembered, and scaling a serving site down is never our call.
    """
    spec, notes = _section(obj, "spec"), annotations_of(obj)
    if kind in WORKLOADS:
        spec_patch: Obj = {}
        note_patch: dict[str, str | None] = {}
        changes = []
        if _int(spec.get("replicas"), 1) == 0:
            remembered = _count(notes.get(ANNOTATION_REPLICAS))
            if remembered is not None:
                spec_patch["replicas"] = remembered
                changes.append(f"replicas 0 -> {remembered} (remembered)")
            elif replicas is not None:
                spec_patch["replicas"] = replicas
                changes.append(f"replicas 0 -> {replicas} (the source's count)")
            else:
                raise PermanentError(
                    f"no replica count is known: no {ANNOTATION_REPLICAS} annotation and no count "
                    "recorded from the source cluster"
                )
        if notes.get(ANNOTATION_FLUX_RECONCILE) == "disabled":
            note_patch[ANNOTATION_FLUX_RECONCILE] = None
            changes.append("Flux reconcile re-enabled")
        return Edit(_patch(spec_patch, note_patch), ", ".join(changes)) if changes else None
    if kind == CRON_JOB:
        return Edit(_patch({"suspend": False}), "suspend true -> false") if _suspended(obj) else None
    if kind in FLUX:
        spec_patch, note_patch, changes = {}, {}, []
        if _suspended(obj):
            spec_patch["suspend"] = False
            changes.append("suspend true -> false")
        if requested_at is not None and notes.get(ANNOTATION_REQUESTED_AT) != requested_at:
            note_patch[ANNOTATION_REQUESTED_AT] = requested_at
            changes.append(f"reconcile requested at {requested_at}")
        return Edit(_patch(spec_patch, note_patch), ", ".join(changes)) if changes else None
    if kind in NETWORK:
        return _dns_edit(notes, Role.ACTIVE)
    if kind == VOLUME_REPLICATION:
        return _replication_edit(spec, "primary")
    raise _unmanaged(kind)


def _dns_edit(notes: dict[str, str], role: Role) -> Edit | None:
    current, wanted = notes.get(ANNOTATION_DNS_CONTROLLER), DNS_VALUE[role]
    if current == wanted:
        return None
    return Edit(
        _patch(notes={ANNOTATION_DNS_CONTROLLER: wanted}),
        f"external-dns controller {current or '(unset)'} -> {wanted}",
    )


def _replication_edit(spec: Obj, wanted: str) -> Edit | None:
    current = str(spec.get("replicationState", ""))
    if current.lower() == wanted:
        return None
    return Edit(_patch({"replicationState": wanted}), f"replicationState {current or '(unset)'} -> {wanted}")


# --- checks --------------------------------------------------------------------------------------


def judge(kind: str, obj: Obj, role: Role, *, requested_at: str | None = None) -> tuple[bool, str]:
    """Whether ``obj`` has reached ``role``, judged from what its controller reported. Pure.

    Returns ``(reached, detail)``; the detail says what is still missing, or what was seen.
    """
    if kind in WORKLOADS:
        return _workload_passive(obj) if role is Role.PASSIVE else _workload_active(obj)
    if kind == CRON_JOB:
        return _cronjob(obj, role)
    if kind in NETWORK:
        value = annotations_of(obj).get(ANNOTATION_DNS_CONTROLLER)
        wanted = DNS_VALUE[role]
        return value == wanted, f"external-dns controller annotation is {value or '(unset)'}, want {wanted}"
    if kind in FLUX:
        if role is Role.PASSIVE:
            return (True, "suspended") if _suspended(obj) else (False, "not suspended")
        return _flux_active(obj, requested_at)
    if kind == VOLUME_REPLICATION:
        return _volume_passive(obj) if role is Role.PASSIVE else _volume_active(obj)
    raise _unmanaged(kind)


def _workload_passive(obj: Obj) -> tuple[bool, str]:
    status = _section(obj, "status")
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    # The API omits zero counters (omitempty): a missing one is 0.
    running = {f: _int(status.get(f)) for f in ("replicas", "readyReplicas", "availableReplicas")}
    if any(running.values()):
        return False, ", ".join(f"{field} {count}" for field, count in running.items()) + " (want all 0)"
    return True, "no replicas left"


def _workload_active(obj: Obj) -> tuple[bool, str]:
    status, spec = _section(obj, "status"), _section(obj, "spec")
    want = _int(spec.get("replicas"), 1)
    remembered = _count(annotations_of(obj).get(ANNOTATION_REPLICAS))
    if want == 0 and remembered:
        return False, f"still scaled to 0 (remembered {remembered})"
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    ready, updated = _int(status.get("readyReplicas")), _int(status.get("updatedReplicas"))
    detail = f"{ready}/{want} ready, {updated}/{want} updated"
    return ready == updated == want, detail


def _cronjob(obj: Obj, role: Role) -> tuple[bool, str]:
    suspended = _suspended(obj)
    if role is Role.ACTIVE:
        return (False, "suspended") if suspended else (True, "not suspended")
    if not suspended:
        return False, "not suspended"
    running = [str(ref.get("name")) for ref in _section(obj, "status").get("active") or []]
    if running:
        return False, f"suspended, {len(running)} Job(s) still running: {', '.join(running)}"
    return True, "suspended, no running Jobs"


def _flux_active(obj: Obj, requested_at: str | None) -> tuple[bool, str]:
    if _suspended(obj):
        return False, "still suspended"
    if requested_at is not None:
        handled = _section(obj, "status").get("lastHandledReconcileAt")
        if handled != requested_at:
            return False, f"reconcile requested at {requested_at} not handled yet (last handled: {handled})"
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    ready = condition(obj, "Ready")
    return bool(ready and ready.get("status") == "True"), _describe(ready, "Ready")


def _volume_state(obj: Obj) -> str:
    return str(_section(obj, "status").get("state", "")).lower()


def _volume_active(obj: Obj) -> tuple[bool, str]:
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    completed, degraded = condition(obj, "Completed"), condition(obj, "Degraded")
    if completed is not None and completed.get("status") != "True":
        return False, _describe(completed, "Completed")  # e.g. FailedToPromote: say so first
    state = _volume_state(obj)
    if state != "primary":
        return False, f"state {state or '(none)'}, want primary"
    if completed is None:
        return False, _describe(completed, "Completed")
    if degraded and degraded.get("status") == "True":
        return False, _describe(degraded, "Degraded")
    return True, "primary, Completed=True, not Degraded"


def _volume_passive(obj: Obj) -> tuple[bool, str]:
    """Secondary, and no degradation beyond the one a demotion always brings.

    The csi-addons operator marks a successful demotion ``Completed=True/Demoted`` together with
    ``Degraded=True/VolumeDegraded`` (and ``Resyncing``): a fresh secondary is out of sync until it
    replicates from the new primary. In CONSISTENCY mode that primary is only promoted *after* this
    check passes, so waiting for ``Degraded=False`` here could never finish. So a secondary counts as
    passive while ``Degraded=True`` carries the demotion's own reason ``VolumeDegraded`` and the
    demotion itself completed; any other degradation (reason ``Error``, ``Completed=False`` with
    ``FailedToDemote``) means the demotion failed and the volume may still accept writes: not passive.
    """
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    completed, degraded = condition(obj, "Completed"), condition(obj, "Degraded")
    if completed is not None and completed.get("status") != "True":
        return False, _describe(completed, "Completed")  # e.g. FailedToDemote: say so first
    state = _volume_state(obj)
    if state != "secondary":
        return False, f"state {state or '(none)'}, want secondary"
    if degraded and degraded.get("status") == "True":
        expected = degraded.get("reason") == "VolumeDegraded" and completed is not None
        if not expected:
            return False, _describe(degraded, "Degraded")
        return True, "secondary (degraded while it resyncs, as after every demotion)"
    return True, "secondary"


# --- observation ---------------------------------------------------------------------------------


def guess_role(kind: str, obj: Obj) -> Role | None:
    """The role the object's spec (not status) asks for, when it says; None when it is ambiguous."""
    spec, notes = _section(obj, "spec"), annotations_of(obj)
    if kind in WORKLOADS:
        return Role.ACTIVE if _int(spec.get("replicas"), 1) > 0 else Role.PASSIVE
    if kind == CRON_JOB or kind in FLUX:
        return Role.PASSIVE if _suspended(obj) else Role.ACTIVE
    if kind in NETWORK:
        value = notes.get(ANNOTATION_DNS_CONTROLLER)
        return next((role for role, wanted in DNS_VALUE.items() if wanted == value), None)
    if kind == VOLUME_REPLICATION:
        state = str(spec.get("replicationState", "")).lower()
        return {"primary": Role.ACTIVE, "secondary": Role.PASSIVE}.get(state)
    return None


def replica_count(kind: str, obj: Obj) -> int | None:
    """``spec.replicas`` when above 0, else the remembered count; None for other kinds or unknown."""
    if kind not in WORKLOADS:
        return None
    replicas = _int(_section(obj, "spec").get("replicas"), 1)
    if replicas > 0:
        return replicas
    return _count(annotations_of(obj).get(ANNOTATION_REPLICAS))
