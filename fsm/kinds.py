"""What "active" and "passive" mean for each kind (docs/API.md's table): the one home of the per-kind rules.

Pure: every function here takes an object as the API server returned it (a plain mapping, camelCase
keys) and computes the merge patch that moves it to a role, whether its ``status`` says it got there,
or what role it shows. It reads no cluster, no clock and no environment. Its users do the I/O:
``workers.kube`` (the effects: it adds the ``resourceVersion`` precondition and the epoch annotation to
every patch and retries on conflicts), ``fsm.health`` (the health checker's verdicts are built on the
readers and families here) and ``producers.kube`` (the registry of where each kind is served).

An edit function returns ``None`` when the object is already in the wanted form, which is what makes
every effect idempotent: a second call changes nothing and writes nothing.

Errors: fsm may not import ``workers.errors``, so a rule that cannot apply raises a :class:`KindError`
(a ``ValueError``); the adapter translates it into ``PermanentError`` at its boundary, message kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeGuard

from fsm.models import (
    ANNOTATION_REPLICAS,
    API_GROUP,
    API_VERSION,
    VOLUME_REPLICATION,
    FluxKind,
    NetworkKind,
    WorkloadKind,
)

Obj = Mapping[str, Any]  # an object as the API server returned it
Patch = dict[str, Any]  # a JSON merge patch


class Role(StrEnum):
    ACTIVE = "active"
    PASSIVE = "passive"


ANNOTATION_FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"
ANNOTATION_DNS_CONTROLLER = "external-dns.alpha.kubernetes.io/controller"
ANNOTATION_REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
DNS_VALUE = {Role.ACTIVE: "dns-controller", Role.PASSIVE: "ignore"}

# The families share their rules; the names come from the FailoverGroup's own enums (fsm.models).
WORKLOADS = frozenset({WorkloadKind.DEPLOYMENT.value, WorkloadKind.STATEFUL_SET.value})
CRON_JOB = WorkloadKind.CRON_JOB.value
NETWORK = frozenset(kind.value for kind in NetworkKind)
FLUX = frozenset(kind.value for kind in FluxKind)


class KindError(ValueError):
    """A per-kind rule cannot apply; retrying cannot help (the adapter reports a PermanentError)."""


class UnknownKind(KindError):
    """A kind the orchestrator does not manage."""


class NoReplicaCount(KindError):
    """A workload at 0 replicas is to be made active, and no count to scale it to is known."""


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
        KindInfo(CRON_JOB, "batch", ("v1",), "cronjobs"),
        KindInfo("Ingress", "networking.k8s.io", ("v1",), "ingresses"),
        # Istio serves v1 since 1.22; older installations only v1beta1 (chosen through discovery).
        KindInfo("VirtualService", "networking.istio.io", ("v1", "v1beta1"), "virtualservices"),
        KindInfo("HelmRelease", "helm.toolkit.fluxcd.io", ("v2",), "helmreleases"),
        KindInfo("Kustomization", "kustomize.toolkit.fluxcd.io", ("v1",), "kustomizations"),
        KindInfo(VOLUME_REPLICATION, "replication.storage.openshift.io", ("v1alpha1",), "volumereplications"),
    )
}
JOBS = KindInfo("Job", "batch", ("v1",), "jobs")
# This project's own resources, served like any other kind.
FAILOVERS = KindInfo("Failover", API_GROUP, (API_VERSION,), "failovers")
FAILOVER_GROUPS = KindInfo("FailoverGroup", API_GROUP, (API_VERSION,), "failovergroups")


def _unmanaged(kind: str) -> UnknownKind:
    return UnknownKind(f"kind {kind!r} is not one the orchestrator manages ({', '.join(sorted(KINDS))})")


def kind_info(kind: str) -> KindInfo:
    info = KINDS.get(kind)
    if info is None:
        raise _unmanaged(kind)
    return info


@dataclass(frozen=True)
class Edit:
    """A merge patch that moves an object to a role, and in words what it changes."""

    patch: Patch
    detail: str


# --- reading objects -------------------------------------------------------------------------------


def section(obj: Obj, name: str) -> Obj:
    """``obj[name]`` when it is a mapping, else empty (the API omits empty sections)."""
    value = obj.get(name)
    return value if isinstance(value, Mapping) else {}


def annotations_of(obj: Obj) -> Mapping[str, str]:
    value = section(obj, "metadata").get("annotations")
    return value if isinstance(value, Mapping) else {}


def as_int(value: object, default: int = 0) -> int:
    """A whole number from a field (an int or a string of digits); ``default`` for anything else."""
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
    """The ``status.conditions`` entry of ``type_``, if the controller reported one."""
    for item in section(obj, "status").get("conditions") or []:
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return None


def is_true(cond: Obj | None) -> TypeGuard[Obj]:
    """Whether a condition is there and ``True``."""
    return cond is not None and cond.get("status") == "True"


def suspended(obj: Obj) -> bool:
    return section(obj, "spec").get("suspend") is True


def volume_state(obj: Obj) -> str:
    """A VolumeReplication's reported state (``status.state``), lower case; empty when not reported."""
    return str(section(obj, "status").get("state") or "").lower()


def _replication_state(obj: Obj) -> str:
    """The state a VolumeReplication's spec asks for (``spec.replicationState``), lower case."""
    return str(section(obj, "spec").get("replicationState") or "").lower()


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
    generation = as_int(section(obj, "metadata").get("generation"), 1)
    observed = section(obj, "status").get("observedGeneration")
    if observed is None or as_int(observed, -1) < generation:
        return False, f"observedGeneration {observed} behind generation {generation}"
    return True, ""


def _patch(spec: Patch | None = None, notes: dict[str, str | None] | None = None) -> Patch:
    patch: Patch = {}
    if notes:
        patch["metadata"] = {"annotations": notes}
    if spec:
        patch["spec"] = spec
    return patch


# --- edits ---------------------------------------------------------------------------------------


def passive_edit(kind: str, obj: Obj) -> Edit | None:
    """The merge patch that makes ``obj`` passive, or None when it already is. Pure."""
    spec, notes = section(obj, "spec"), annotations_of(obj)
    if kind in WORKLOADS:
        replicas = as_int(spec.get("replicas"), 1)
        spec_patch: Patch = {}
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
        return None if suspended(obj) else Edit(_patch({"suspend": True}), "suspend false -> true")
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
    ``replicas`` (the source's count recorded in the plan); with neither, :class:`NoReplicaCount`.
    A workload already running (replicas > 0) keeps its count: an autoscaler or a person may have
    changed it since the count was remembered, and scaling a serving site down is never our call.
    """
    spec, notes = section(obj, "spec"), annotations_of(obj)
    if kind in WORKLOADS:
        spec_patch: Patch = {}
        note_patch: dict[str, str | None] = {}
        changes = []
        if as_int(spec.get("replicas"), 1) == 0:
            remembered = _count(notes.get(ANNOTATION_REPLICAS))
            if remembered is not None:
                spec_patch["replicas"] = remembered
                changes.append(f"replicas 0 -> {remembered} (remembered)")
            elif replicas is not None:
                spec_patch["replicas"] = replicas
                changes.append(f"replicas 0 -> {replicas} (the source's count)")
            else:
                raise NoReplicaCount(
                    f"no replica count is known: no {ANNOTATION_REPLICAS} annotation and no count "
                    "recorded from the source cluster"
                )
        if notes.get(ANNOTATION_FLUX_RECONCILE) == "disabled":
            note_patch[ANNOTATION_FLUX_RECONCILE] = None
            changes.append("Flux reconcile re-enabled")
        return Edit(_patch(spec_patch, note_patch), ", ".join(changes)) if changes else None
    if kind == CRON_JOB:
        return Edit(_patch({"suspend": False}), "suspend true -> false") if suspended(obj) else None
    if kind in FLUX:
        spec_patch, note_patch, changes = {}, {}, []
        if suspended(obj):
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


def blind_edit(kind: str, role: Role, *, requested_at: str | None = None) -> Edit | None:
    """The merge patch that moves any object of ``kind`` to ``role`` whatever it holds (sent without a
    read first), or None when it depends on the object (workloads: the replica count). Pure. It sets
    what :func:`passive_edit` and :func:`active_edit` would: on an object in that form it changes nothing."""
    if kind == CRON_JOB or kind in FLUX:
        suspend = role is Role.PASSIVE
        request = requested_at if kind in FLUX and not suspend else None
        notes: dict[str, str | None] | None = {ANNOTATION_REQUESTED_AT: request} if request else None
        asked = f", reconcile requested at {request}" if request else ""
        return Edit(_patch({"suspend": suspend}, notes), f"suspend -> {str(suspend).lower()}{asked}")
    if kind in NETWORK:
        wanted = DNS_VALUE[role]
        return Edit(_patch(notes={ANNOTATION_DNS_CONTROLLER: wanted}), f"external-dns controller -> {wanted}")
    if kind == VOLUME_REPLICATION:
        state = "primary" if role is Role.ACTIVE else "secondary"
        return Edit(_patch({"replicationState": state}), f"replicationState -> {state}")
    if kind in WORKLOADS:
        return None
    raise _unmanaged(kind)


def _dns_edit(notes: Mapping[str, str], role: Role) -> Edit | None:
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
            return (True, "suspended") if suspended(obj) else (False, "not suspended")
        return _flux_active(obj, requested_at)
    if kind == VOLUME_REPLICATION:
        return _volume_passive(obj) if role is Role.PASSIVE else _volume_active(obj)
    raise _unmanaged(kind)


def _workload_passive(obj: Obj) -> tuple[bool, str]:
    status = section(obj, "status")
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    # The API omits zero counters (omitempty): a missing one is 0.
    running = {f: as_int(status.get(f)) for f in ("replicas", "readyReplicas", "availableReplicas")}
    if any(running.values()):
        return False, ", ".join(f"{field} {count}" for field, count in running.items()) + " (want all 0)"
    return True, "no replicas left"


def _workload_active(obj: Obj) -> tuple[bool, str]:
    status, spec = section(obj, "status"), section(obj, "spec")
    want = as_int(spec.get("replicas"), 1)
    remembered = _count(annotations_of(obj).get(ANNOTATION_REPLICAS))
    if want == 0 and remembered:
        return False, f"still scaled to 0 (remembered {remembered})"
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    ready, updated = as_int(status.get("readyReplicas")), as_int(status.get("updatedReplicas"))
    detail = f"{ready}/{want} ready, {updated}/{want} updated"
    return ready == updated == want, detail


def _cronjob(obj: Obj, role: Role) -> tuple[bool, str]:
    paused = suspended(obj)
    if role is Role.ACTIVE:
        return (False, "suspended") if paused else (True, "not suspended")
    if not paused:
        return False, "not suspended"
    running = [str(ref.get("name")) for ref in section(obj, "status").get("active") or []]
    if running:
        return False, f"suspended, {len(running)} Job(s) still running: {', '.join(running)}"
    return True, "suspended, no running Jobs"


def _flux_active(obj: Obj, requested_at: str | None) -> tuple[bool, str]:
    if suspended(obj):
        return False, "still suspended"
    if requested_at is not None:
        handled = section(obj, "status").get("lastHandledReconcileAt")
        if handled != requested_at:
            return False, f"reconcile requested at {requested_at} not handled yet (last handled: {handled})"
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return False, why
    ready = condition(obj, "Ready")
    return is_true(ready), _describe(ready, "Ready")


def _volume_in(obj: Obj, wanted: str) -> tuple[str | None, Obj | None, Obj | None]:
    """Why a VolumeReplication is not (yet) in state ``wanted`` (None when it is), with its Completed
    and Degraded conditions for the role's own last word."""
    caught_up, why = _caught_up(obj)
    if not caught_up:
        return why, None, None
    completed, degraded = condition(obj, "Completed"), condition(obj, "Degraded")
    if completed is not None and not is_true(completed):
        # e.g. FailedToPromote or FailedToDemote: say so first
        return _describe(completed, "Completed"), completed, degraded
    state = volume_state(obj)
    if state != wanted:
        return f"state {state or '(none)'}, want {wanted}", completed, degraded
    return None, completed, degraded


def _volume_active(obj: Obj) -> tuple[bool, str]:
    why, completed, degraded = _volume_in(obj, "primary")
    if why is not None:
        return False, why
    if completed is None:
        return False, _describe(completed, "Completed")
    if is_true(degraded):
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
    why, completed, degraded = _volume_in(obj, "secondary")
    if why is not None:
        return False, why
    if is_true(degraded):
        expected = degraded.get("reason") == "VolumeDegraded" and completed is not None
        if not expected:
            return False, _describe(degraded, "Degraded")
        return True, "secondary (degraded while it resyncs, as after every demotion)"
    return True, "secondary"


# --- observation ---------------------------------------------------------------------------------


def guess_role(kind: str, obj: Obj) -> Role | None:
    """The role the object's spec (not status) asks for, when it says; None when it is ambiguous."""
    spec, notes = section(obj, "spec"), annotations_of(obj)
    if kind in WORKLOADS:
        return Role.ACTIVE if as_int(spec.get("replicas"), 1) > 0 else Role.PASSIVE
    if kind == CRON_JOB or kind in FLUX:
        return Role.PASSIVE if suspended(obj) else Role.ACTIVE
    if kind in NETWORK:
        value = notes.get(ANNOTATION_DNS_CONTROLLER)
        return next((role for role, wanted in DNS_VALUE.items() if wanted == value), None)
    if kind == VOLUME_REPLICATION:
        return {"primary": Role.ACTIVE, "secondary": Role.PASSIVE}.get(_replication_state(obj))
    return None


def replica_count(kind: str, obj: Obj) -> int | None:
    """``spec.replicas`` when above 0, else the remembered count; None for other kinds or unknown."""
    if kind not in WORKLOADS:
        return None
    replicas = as_int(section(obj, "spec").get("replicas"), 1)
    if replicas > 0:
        return replicas
    return _count(annotations_of(obj).get(ANNOTATION_REPLICAS))


def active_sign(kind: str, obj: Obj | None) -> str | None:
    """Why ``obj`` is active (serving, writing, publishing or reconciling), or None when it is not.

    A missing object is not active. Deployment/StatefulSet: replicas > 0 or any ready; CronJob: not
    suspended; VolumeReplication: primary (status or spec); Ingress/VirtualService: external-dns
    annotation ``dns-controller``; HelmRelease/Kustomization: not suspended. Unlike :func:`guess_role`
    it also reads ``status``: a site that came back may still run what its spec no longer asks for.
    """
    if obj is None:
        return None
    if kind in WORKLOADS:
        desired = as_int(section(obj, "spec").get("replicas"), 1)
        ready = as_int(section(obj, "status").get("readyReplicas"))
        return f"{desired} replicas, {ready} ready" if desired > 0 or ready > 0 else None
    if kind == CRON_JOB:
        return None if suspended(obj) else "scheduled"
    if kind == VOLUME_REPLICATION:
        if volume_state(obj) == "primary":
            return "primary"
        return "replicationState primary" if _replication_state(obj) == "primary" else None
    if kind in NETWORK:
        published = annotations_of(obj).get(ANNOTATION_DNS_CONTROLLER) == DNS_VALUE[Role.ACTIVE]
        return "DNS published" if published else None
    if kind in FLUX:
        return None if suspended(obj) else "resumed"
    return None
