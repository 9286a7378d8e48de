"""The objects of one step, read and written in the fewest requests that keep :mod:`workers.kube`'s
guarantees: what a step costs the API server, per object, is what a site-wide failover multiplies.

- **Reads.** The step's objects of one kind in one namespace are read with one LIST when there are two
  or more of them, with one GET otherwise; the requests go out in parallel over the cluster's pooled
  connections. A LIST without ``resourceVersion`` is a quorum read like a GET, and each item carries
  its own ``resourceVersion``: a patch computed from an item is conditioned exactly as one computed from
  a GET (RBAC: list on the managed kinds, deploy/rbac).
- **Writes that do not depend on the object** (:func:`fsm.kinds.blind_edit`: ``suspend``,
  ``replicationState``, the external-dns annotation, the Flux reconcile request) are sent without a
  read, **on a cluster that enforces deploy/fencing's policies** (:func:`fence_enforced`). They set
  the same fields as the read-modify-write would, so a redelivered step sends the same patch and the
  server changes nothing the second time; they carry the epoch and the group label like every write,
  so the policy refuses them from a stale run: a write held on the way while its run was paused and
  a newer run took the group lands below the fence. Without the policy, the ``resourceVersion`` is
  that defence (the held write answers 409 once a newer run changed the object, and the re-read
  meets the lost lease), so there every object is read-modify-write.
- **Writes that do** (workloads: the replica count is read, remembered, restored) keep the
  read-modify-write: patched conditioned on the ``resourceVersion`` read (from the LIST or GET above,
  or as this process last read or wrote it moments ago: :class:`Recall`), and on 409 that object
  alone is read again and the edit recomputed (:func:`write`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import wait
from dataclasses import replace
from typing import TYPE_CHECKING, cast

import structlog

from fsm.kinds import (
    FAILOVER_GROUPS,
    Edit,
    KindError,
    active_edit,
    annotations_of,
    as_int,
    blind_edit,
    passive_edit,
)
from fsm.models import ANNOTATION_EPOCH, ANNOTATION_FENCE, LABEL_GROUP, GroupKey, ResourceRef
from workers.errors import (
    ConflictError,
    Fenced,
    NotFoundError,
    OrchestratorError,
    PermanentError,
)
from workers.kube_client import KubeClients, Obj, Target
from workers.ports import Change, Role

if TYPE_CHECKING:
    from workers.kube import KubeEffects

log = structlog.get_logger(__name__)

# deploy/fencing: the policy on the groups' objects, the one that keeps a fence from going down.
FENCE_POLICIES = ("failover-fence.hahomelabs.com", "failover-fence-grows.hahomelabs.com")
ADMISSION = "admissionregistration.k8s.io"

Seen = tuple[Target, Obj] | None  # where an object is served and the object; None: not found


@contextlib.contextmanager
def located(cluster: str, ref: ResourceRef) -> Iterator[None]:
    """Make sure every error leaving the adapter is ours and says which cluster and object it is about."""
    try:
        yield
    except KindError as error:
        raise PermanentError(str(error), cluster=cluster, obj=str(ref)) from error
    except OrchestratorError as error:
        error.cluster = error.cluster or cluster
        error.obj = error.obj or str(ref)
        raise


def fenced(edit: Edit, obj: Obj | None, epoch: int, group: str) -> Obj:
    """``edit``'s merge patch stamped with the epoch and labelled with the group (what the clusters'
    fence policy, deploy/fencing, checks), conditioned on ``obj``'s resourceVersion when the edit was
    computed from ``obj`` (None: a blind edit, :func:`fsm.kinds.blind_edit`, is not conditioned)."""
    patch = json.loads(json.dumps(edit.patch))
    metadata = patch.setdefault("metadata", {})
    if obj is not None:
        metadata["resourceVersion"] = (obj.get("metadata") or {}).get("resourceVersion")
    metadata.setdefault("annotations", {})[ANNOTATION_EPOCH] = str(epoch)
    if group:
        metadata.setdefault("labels", {})[LABEL_GROUP] = group
    return cast(Obj, patch)


# What fsm.kinds' edits read of an object (passive_edit, active_edit): the rest is not kept.
EDITED_SPEC = ("replicas", "suspend", "replicationState")


def trimmed(obj: Obj) -> Obj:
    """``obj`` cut to its resourceVersion, annotations and the spec fields the edits read."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": {key: spec[key] for key in EDITED_SPEC if key in spec},
    }


class Recall:
    """The objects this worker process read or wrote last (:func:`trimmed`), for ``ttl`` seconds.

    An effect that must read its objects (workloads: the replica count) computes its patch from the one
    recalled, e.g. as ``validate`` read it a moment before, and sends it conditioned on that
    resourceVersion: if the object changed since, the patch gets 409 and the object is read afresh
    (:func:`write`), so a recalled object is exactly as good as one just read, or costs
    one request more. One whose edit would be nothing is not used (no write would check it).
    """

    def __init__(self, ttl: float = 60.0, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, ResourceRef], tuple[float, Obj]] = OrderedDict()

    def remember(self, cluster: str, ref: ResourceRef, obj: Obj) -> None:
        with self._lock:
            self._seen[(cluster, ref)] = (time.monotonic(), trimmed(obj))
            self._seen.move_to_end((cluster, ref))
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)

    def recall(self, cluster: str, ref: ResourceRef) -> Obj | None:
        with self._lock:
            found = self._seen.get((cluster, ref))
        if found is None or time.monotonic() - found[0] > self.ttl:
            return None
        return found[1]


def not_found(cluster: str, ref: ResourceRef) -> NotFoundError:
    """The error a GET of a missing ``ref`` gives (same message), for one missing from a LIST."""
    return NotFoundError(f"{ref} not found on cluster {cluster!r}", cluster=cluster, obj=str(ref))


def batches(refs: Sequence[ResourceRef]) -> list[list[ResourceRef]]:
    """``refs`` by kind and namespace, in the order each first appears: one request per batch."""
    by: dict[tuple[str, str], list[ResourceRef]] = {}
    for ref in dict.fromkeys(refs):
        by.setdefault((ref.kind, ref.namespace), []).append(ref)
    return list(by.values())


def _listed(effects: KubeEffects, cluster: str, ref: ResourceRef) -> tuple[Target, list[Obj]]:
    """The collection ``ref``'s kind is served at in its namespace, and its items (one LIST). As in
    :meth:`KubeEffects.read`, a version found gone is looked up again once through discovery. Its
    errors name ``ref``, the first object of the step the LIST was for."""
    for attempt in (1, 2):
        collection = replace(effects.target(cluster, ref), name=None)
        try:
            return collection, effects.clients.list(collection)
        except PermanentError as error:
            if attempt == 2 or not effects.retarget(cluster, ref, error):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def read_batch(effects: KubeEffects, cluster: str, batch: Sequence[ResourceRef]) -> dict[ResourceRef, Seen]:
    """One request for ``batch`` (refs of one kind and namespace): a GET for one, else a LIST."""
    first = batch[0]
    with located(cluster, first):
        if len(batch) == 1:
            try:
                target, obj = effects.read(cluster, first)
            except NotFoundError:
                return {first: None}
            effects.recall.remember(cluster, first, obj)
            return {first: (target, obj)}
        collection, items = _listed(effects, cluster, first)
    by_name = {str((item.get("metadata") or {}).get("name")): item for item in items}
    for ref in batch:
        if ref.name in by_name:
            effects.recall.remember(cluster, ref, by_name[ref.name])
    return {
        ref: (collection.named(ref.name, str(ref)), by_name[ref.name]) if ref.name in by_name else None
        for ref in batch
    }


def read_many(effects: KubeEffects, cluster: str, refs: Sequence[ResourceRef]) -> dict[ResourceRef, Seen]:
    """Every ref of ``refs`` as it is now (None: not found), one request per kind and namespace, the
    requests in parallel; once all have ended, the first error (in the order of ``refs``) is raised."""
    groups = batches(refs)
    if len(groups) <= 1:
        found = read_batch(effects, cluster, groups[0]) if groups else {}
        return {ref: found[ref] for ref in refs}
    pool = effects.read_pool()
    futures = [pool.submit(read_batch, effects, cluster, batch) for batch in groups]
    wait(futures)
    merged: dict[ResourceRef, Seen] = {}
    for future in futures:
        merged.update(future.result())
    return {ref: merged[ref] for ref in refs}


def fence_enforced(clients: KubeClients, cluster: str) -> bool:
    """Whether ``cluster`` holds deploy/fencing's two policies, each bound with ``Deny`` (two LISTs of
    cluster-scoped objects; RBAC: list on both). False when the cluster says it cannot tell (forbidden,
    as with deploy/rbac-namespaced; not served): every object is then read-modify-write. A cluster
    that does not answer raises (TemporaryError, ClusterUnreachable): it is asked again next time."""
    listed = {}
    for plural in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        target = Target(cluster, ADMISSION, "v1", plural, "", None, "")  # errors name the step's object
        try:
            listed[plural] = {
                str((item.get("metadata") or {}).get("name")): item for item in clients.list_cluster(target)
            }
        except PermanentError as error:
            log.info("kube.fence_unknown", cluster=cluster, reason=error.message)
            return False
    policies, bindings = listed["validatingadmissionpolicies"], listed["validatingadmissionpolicybindings"]
    for name in FENCE_POLICIES:
        spec = (bindings.get(name) or {}).get("spec") or {}
        if (
            name not in policies
            or spec.get("policyName") != name
            or "Deny" not in (spec.get("validationActions") or [])
        ):
            log.info(
                "kube.fence_unknown", cluster=cluster, reason=f"policy {name} missing or not bound with Deny"
            )
            return False
    return True


def make_many(
    effects: KubeEffects,
    cluster: str,
    refs: Sequence[ResourceRef],
    role: Role,
    *,
    stamp: tuple[int, str],
    replicas: Mapping[str, int],
    requested_at: Mapping[ResourceRef, str | None],
    before_write: Callable[[], None] | None = None,
) -> list[Change]:
    """Move every ref to ``role``: blind patches where the edit does not depend on the object and the
    cluster enforces the fence, the others read together (:func:`read_many`) and patched conditioned
    on what was read."""
    blind: dict[ResourceRef, Edit | None] = {}
    with located(cluster, refs[0]) if refs else contextlib.nullcontext():
        fenced_here = effects.fence_enforced(cluster)
    for ref in refs:
        with located(cluster, ref):
            edit = blind_edit(ref.kind, role, requested_at=requested_at.get(ref))
            blind[ref] = edit if fenced_here else None
    rmw = [ref for ref in refs if blind[ref] is None]
    recalled = _recalled(effects, cluster, rmw, _edits(role, replicas, requested_at))
    seen = read_many(effects, cluster, [ref for ref in rmw if ref not in recalled])
    seen.update(recalled)
    changes = []
    for ref in refs:
        with located(cluster, ref):
            edit = blind[ref]
            if edit is not None:
                changes.append(
                    write(effects, cluster, ref, edit, role=role, stamp=stamp, before_write=before_write)
                )
                continue
            first = seen[ref]
            if first is None:
                raise not_found(cluster, ref)
            edit_of = _edit_of(ref, role, replicas, requested_at)
            changes.append(
                write(
                    effects,
                    cluster,
                    ref,
                    edit_of,
                    role=role,
                    stamp=stamp,
                    first=first,
                    before_write=before_write,
                )
            )
    return changes


def _edits(
    role: Role, replicas: Mapping[str, int], requested_at: Mapping[ResourceRef, str | None]
) -> Callable[[ResourceRef], Callable[[Obj], Edit | None]]:
    return lambda ref: _edit_of(ref, role, replicas, requested_at)


def _recalled(
    effects: KubeEffects,
    cluster: str,
    refs: Sequence[ResourceRef],
    edits: Callable[[ResourceRef], Callable[[Obj], Edit | None]],
) -> dict[ResourceRef, Seen]:
    """The refs whose recalled object (:class:`Recall`) gives a write: no need to read them first."""
    found: dict[ResourceRef, Seen] = {}
    for ref in refs:
        obj = effects.recall.recall(cluster, ref)
        try:
            if obj is not None and edits(ref)(obj) is not None:
                found[ref] = (effects.target(cluster, ref), obj)
        except (KindError, OrchestratorError):
            continue  # read it: the read says it with the object as it is now
    return found


def _edit_of(
    ref: ResourceRef, role: Role, replicas: Mapping[str, int], requested_at: Mapping[ResourceRef, str | None]
) -> Callable[[Obj], Edit | None]:
    if role is Role.PASSIVE:
        return lambda obj: passive_edit(ref.kind, obj)
    return lambda obj: active_edit(
        ref.kind, obj, replicas=replicas.get(ref.name), requested_at=requested_at.get(ref)
    )


def write(
    effects: KubeEffects,
    cluster: str,
    ref: ResourceRef,
    edit: Edit | Callable[[Obj], Edit | None],
    *,
    role: Role,
    stamp: tuple[int, str],
    first: Seen = None,
    before_write: Callable[[], None] | None = None,
) -> Change:
    """Move ``ref`` to ``role`` with one patch stamped with the epoch and the group (:func:`fenced`),
    sent again on 409 up to ``conflict_attempts`` times, ``before_write`` (the lease guard) right
    before every patch: a writer frozen inside an attempt does not write again on a lease it lost.

    An :class:`Edit` is sent as it is, without a read nor ``resourceVersion`` (:func:`blind_edit`;
    ``changed``: a write went out). Not conditioned, its 409 is the server's own (or an injected
    fault): the same patch again; a version found gone is looked up again through discovery. A
    function of the object is read-modify-write: the edit computed from ``first`` (as the step read
    it; a stale one gets 409) or from a read, conditioned on its resourceVersion; on 409 read again
    and recomputed. No edit: already in the wanted form, nothing written."""
    action, blind = f"make_{role.value}", isinstance(edit, Edit)
    target: Target | None = None
    conflict: ConflictError | None = None
    for attempt in range(1, effects.conflict_attempts + 1):
        obj: Obj | None = None
        if isinstance(edit, Edit):
            target, wanted = target if target is not None else effects.target(cluster, ref), edit
        else:
            target, obj = first if first is not None and attempt == 1 else effects.read(cluster, ref)
            found = edit(obj)
            if found is None:
                return Change(cluster, ref, action, changed=False, detail=f"already {role.value}")
            wanted = found
        if before_write is not None:
            before_write()
        try:
            written = effects.clients.patch(target, fenced(wanted, obj, *stamp))
        except ConflictError as error:
            conflict = error
            _conflicted(cluster, ref, action, attempt, effects.conflict_attempts, blind=blind)
            continue
        except PermanentError as error:
            if not blind or attempt == effects.conflict_attempts or not effects.retarget(cluster, ref, error):
                raise
            target = None  # located again, through discovery, by the next attempt
            continue
        if not blind:
            effects.recall.remember(cluster, ref, written)
        log.info(
            "kube.changed", cluster=cluster, obj=str(ref), action=action, detail=wanted.detail, epoch=stamp[0]
        )
        return Change(cluster=cluster, ref=ref, action=action, changed=True, detail=wanted.detail)
    why = "" if blind else " kept changing under us"
    raise ConflictError(
        f"{ref}{why}: {effects.conflict_attempts} patches in a row got 409 Conflict",
        cluster=cluster,
        obj=str(ref),
    ) from conflict


def _conflicted(
    cluster: str, ref: ResourceRef, action: str, attempt: int, attempts: int, *, blind: bool
) -> None:
    """Log a patch that got 409, and what comes next."""
    again = "send again" if blind else "re-read and retry"
    log.info(
        "kube.patch_conflict",
        cluster=cluster,
        obj=str(ref),
        action=action,
        attempt=f"{attempt} of {attempts}",
        next=again if attempt < attempts else "give up",
    )


def raise_fence(effects: KubeEffects, cluster: str, group: GroupKey, token: int) -> Change:
    """Raise ``group``'s fence annotation on ``cluster`` to ``token``; :class:`Fenced` if it is higher.

    Where deploy/fencing is enforced, one merge patch and no read: the cluster decides atomically (its
    policy refuses to lower a fence: 403 ``fenced:``, raised as Fenced; the same fence again changes
    nothing). Elsewhere, read it, refuse here, and patch conditioned on the resourceVersion read.
    """
    ref = ResourceRef(kind=FAILOVER_GROUPS.kind, namespace=group.namespace, name=group.name)
    info = FAILOVER_GROUPS
    target = Target(cluster, info.group, info.versions[0], info.plural, ref.namespace, ref.name, str(ref))
    with located(cluster, ref):
        blind = effects.fence_enforced(cluster)
        for _attempt in range(effects.conflict_attempts):
            patch: Obj = {"metadata": {"annotations": {ANNOTATION_FENCE: str(token)}}}
            if not blind:
                obj = effects.clients.get(target)
                current = as_int(annotations_of(obj).get(ANNOTATION_FENCE), 0)
                if current > token:
                    raise Fenced(
                        f"fenced: the fence of {ref} on {cluster!r} is {current}, above this run's "
                        f"token {token}: a newer run owns the group"
                    )
                if current == token:
                    return Change(cluster, ref, "raise_fence", changed=False, detail=f"fence already {token}")
                patch["metadata"]["resourceVersion"] = (obj.get("metadata") or {}).get("resourceVersion")
            try:
                effects.clients.patch(target, patch)
            except ConflictError:
                continue
            log.info("kube.fence_raised", cluster=cluster, group=str(group), fence=token, read=not blind)
            return Change(cluster, ref, "raise_fence", changed=True, detail=f"fence {token}")
    raise ConflictError(f"the fence of {ref} kept changing under us", cluster=cluster, obj=str(ref))
