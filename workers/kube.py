"""The :class:`~workers.ports.ClusterEffects` port on the official ``kubernetes`` client.

:class:`KubeEffects` implements the port with the per-kind rules of :mod:`fsm.kinds` (docs/API.md's
"active/passive" table) over :class:`~workers.kube_client.KubeClients`, which holds the connections,
the discovery cache and the translation of the client's errors into :mod:`workers.errors`.

What each operation needs (after Patroni's ``AbstractDCS`` docstring):

=================  ===================================================================================
operation          needs
=================  ===================================================================================
make_passive,      CAS-critical: read, compute the merge patch, send it with the ``resourceVersion``
make_active        just read (a concurrent writer makes it 409), re-read and recompute on 409 a few
                   times, then :class:`~workers.errors.ConflictError`. Idempotent: an object already
                   in the wanted form is not written (``Change(changed=False)``). Every write also
                   sets ``failover.hahomelabs.com/epoch`` to the run's fencing token. RBAC: get, patch.
check              a plain read; judged from ``status`` only (what the controller reports), never from
                   the spec we wrote. RBAC: get.
observe            a plain read; a missing object is ``exists=False``, not an error. RBAC: get.
make_many,         what the steps call: the same effects and checks for a step's objects in fewer
check_many,        requests (:mod:`workers.kube_many`): one LIST per kind and namespace holding two
observe_many       or more of them (RBAC: list), edits that do not depend on the object sent without
                   a read where deploy/fencing is enforced (they set the same fields whatever is
                   there, and carry the epoch), the rest read-modify-write as above, from the object as
                   this process read it moments before where it can (a stale one gets 409).
raise_fence        one merge patch, no read, where deploy/fencing's policy refuses a lower fence
                   (Fenced); elsewhere read, refused here, conditioned. RBAC: get, patch failovergroups.
stop_jobs          idempotent: list the namespace's Jobs, delete the CronJob's running ones
                   (background propagation, uid precondition); a Job already gone is skipped.
                   RBAC: get cronjobs; list, delete jobs.
discovery          ``/apis``, cached per cluster (for VirtualService: ``networking.istio.io/v1`` else
                   ``v1beta1``); forgotten when a request finds its API gone. RBAC: none (discovery).
=================  ===================================================================================

Errors are those of :mod:`workers.kube_client`, with ``cluster`` and ``obj`` set; a 409 that outlasts
the retries is a ConflictError; a per-kind rule that cannot apply (:class:`fsm.kinds.KindError`: a
kind we do not manage, no replica count to scale a workload back to) is a PermanentError, its message
kept.

``kubernetes`` may be imported only by ``workers/kube*.py`` (``fsm.kinds`` does not even need it) and
by the watcher; an import-linter contract holds the rest of the product to that.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
from kubernetes.client.exceptions import ApiException

from fsm.kinds import (
    CRON_JOB,
    JOBS,
    Edit,
    KindInfo,
    UnknownKind,
    active_edit,
    annotations_of,
    condition,
    guess_role,
    judge,
    kind_info,
    passive_edit,
    replica_count,
)
from fsm.models import ANNOTATION_EPOCH, GroupKey, ResourceRef
from workers.errors import ConflictError, NotFoundError, PermanentError
from workers.kube_client import KubeClients, Obj, Target
from workers.kube_many import (
    Recall,
    Seen,
    fence_enforced,
    located,
    make_many,
    not_found,
    raise_fence,
    read_many,
    write,
)
from workers.ports import Change, Check, Observation, Role

# The clients and their targets are part of this adapter's surface (workers.api, workers.status).
__all__ = ["KubeClients", "KubeEffects", "Target", "describe_edit"]

log = structlog.get_logger(__name__)


# --- the port --------------------------------------------------------------------------------------


def _not_served(error: PermanentError) -> bool:
    """True for the 404 of a resource the server does not serve (as opposed to a missing object)."""
    cause = error.__cause__
    return isinstance(cause, ApiException) and cause.status == 404 and not isinstance(error, NotFoundError)


def _finished(job: Obj) -> bool:
    if (job.get("status") or {}).get("completionTime"):
        return True
    return any(
        (found := condition(job, type_)) is not None and found.get("status") == "True"
        for type_ in ("Complete", "Failed")
    )


def _shown(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return str(value)


def _observation(cluster: str, ref: ResourceRef, seen: Seen) -> Observation:
    if seen is None:
        return Observation(exists=False, detail=not_found(cluster, ref).message)
    obj = seen[1]
    meta = obj.get("metadata") or {}
    epoch = annotations_of(obj).get(ANNOTATION_EPOCH)
    return Observation(
        exists=True,
        role=guess_role(ref.kind, obj),
        replicas=replica_count(ref.kind, obj),
        detail=f"generation {meta.get('generation')}, epoch {epoch or '(none)'}",
    )


def describe_edit(obj: Obj, edit: Edit) -> str:
    """``edit``'s merge patch against ``obj``, field by field (``spec.replicas 3 -> 0; annotations
    +key=value, -key, ~key=old -> new``). Pure."""
    parts = []
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    for key, new in (edit.patch.get("spec") or {}).items():
        parts.append(f"spec.{key} {_shown((spec or {}).get(key))} -> {_shown(new)}")
    current = annotations_of(obj)
    notes = []
    for key, new in ((edit.patch.get("metadata") or {}).get("annotations") or {}).items():
        if new is None:
            if key in current:
                notes.append(f"-{key}")
        elif key in current:
            notes.append(f"~{key}={current[key]} -> {new}")
        else:
            notes.append(f"+{key}={new}")
    if notes:
        parts.append("annotations " + ", ".join(notes))
    return "; ".join(parts) or edit.detail


class KubeEffects:
    """ClusterEffects on real (or sandbox) Kubernetes API servers. See the module docstring.

    Args:
        clients: the per-cluster clients (a new :class:`KubeClients` on ``kubeconfig`` if None).
        kubeconfig: used only when ``clients`` is None.
        conflict_attempts: patches tried (each after a fresh read) before a 409 becomes ConflictError.
        read_threads: reads :meth:`observe_many` sends at once (the client's connection pool holds 10
            per cluster by default).
    """

    def __init__(
        self,
        clients: KubeClients | None = None,
        *,
        kubeconfig: str | Path | None = None,
        conflict_attempts: int = 5,
        read_threads: int = 8,
        fence_ttl: float = 300.0,
    ) -> None:
        self.clients = clients if clients is not None else KubeClients(kubeconfig)
        self.conflict_attempts = conflict_attempts
        self.read_threads = read_threads
        self.fence_ttl = fence_ttl
        self.recall = Recall()
        self._fence: dict[str, tuple[float, bool]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.clients.close()

    def target(self, cluster: str, ref: ResourceRef) -> Target:
        """Where ``ref`` is served on ``cluster`` (the first of the kind's versions that is served)."""
        info = self._info(cluster, ref)
        version = info.versions[0]
        if len(info.versions) > 1:
            served = self.clients.served_versions(cluster, info.group)
            found = next((v for v in info.versions if v in served), None)
            if found is None:
                wanted = " nor ".join(f"{info.group}/{v}" for v in info.versions)
                raise PermanentError(
                    f"{info.plural}.{info.group} is not served by cluster {cluster!r}: neither {wanted} "
                    "is (is its CRD installed?)",
                    cluster=cluster,
                    obj=str(ref),
                )
            version = found
        return Target(cluster, info.group, version, info.plural, ref.namespace, ref.name, str(ref))

    def read(self, cluster: str, ref: ResourceRef) -> tuple[Target, Obj]:
        """Where ``ref`` is served and the object as it is now.

        A kind served in several versions is located through cached discovery; when the cached
        version has gone (the CRD changed), the cache is dropped and the object looked up once more.
        """
        target = self.target(cluster, ref)
        try:
            return target, self.clients.get(target)
        except PermanentError as error:
            if not self.retarget(cluster, ref, error):
                raise
        target = self.target(cluster, ref)
        return target, self.clients.get(target)

    def retarget(self, cluster: str, ref: ResourceRef, error: PermanentError) -> bool:
        """Whether ``error`` is the 404 of a version of ``ref``'s kind that has gone, with another to
        look for: the caller asks :meth:`target` again (the discovery cache was dropped)."""
        return len(self._info(cluster, ref).versions) > 1 and _not_served(error)

    def fence_enforced(self, cluster: str) -> bool:
        """Whether ``cluster`` enforces deploy/fencing (:func:`workers.kube_many.fence_enforced`),
        looked up again after ``fence_ttl`` seconds."""
        now = time.monotonic()
        with self._pool_lock:
            cached = self._fence.get(cluster)
        if cached is not None and now - cached[0] <= self.fence_ttl:
            return cached[1]
        enforced = fence_enforced(self.clients, cluster)
        with self._pool_lock:
            self._fence[cluster] = (now, enforced)
        return enforced

    def read_pool(self) -> ThreadPoolExecutor:
        """The threads that send a step's reads in parallel (at most ``read_threads`` at once)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="kube-read")
            return self._pool

    # --- ClusterEffects ---------------------------------------------------------------------------

    def make_passive(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        group: str = "",
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        with located(cluster, ref):
            return write(
                self,
                cluster,
                ref,
                lambda obj: passive_edit(ref.kind, obj),
                role=Role.PASSIVE,
                stamp=(epoch, group),
                before_write=before_write,
            )

    def make_active(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        group: str = "",
        replicas: int | None = None,
        requested_at: str | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        with located(cluster, ref):
            return write(
                self,
                cluster,
                ref,
                lambda obj: active_edit(ref.kind, obj, replicas=replicas, requested_at=requested_at),
                role=Role.ACTIVE,
                stamp=(epoch, group),
                before_write=before_write,
            )

    def raise_fence(self, cluster: str, group: GroupKey, *, token: int) -> Change:
        """Raise the group's fence annotation on ``cluster`` to ``token``, never lower it
        (:func:`workers.kube_many.raise_fence`: one patch where deploy/fencing is enforced)."""
        return raise_fence(self, cluster, group, token)

    def check(self, cluster: str, ref: ResourceRef, role: Role, *, requested_at: str | None = None) -> Check:
        with located(cluster, ref):
            _, obj = self.read(cluster, ref)
            reached, detail = judge(ref.kind, obj, role, requested_at=requested_at)
            return Check(reached=reached, detail=detail)

    def observe(self, cluster: str, ref: ResourceRef) -> Observation:
        with located(cluster, ref):
            try:
                seen: Seen = self.read(cluster, ref)
            except NotFoundError as error:
                return Observation(exists=False, detail=error.message)
            return _observation(cluster, ref, seen)

    def observe_many(self, cluster: str, refs: Sequence[ResourceRef]) -> dict[ResourceRef, Observation]:
        """:meth:`observe` of every ref, read with one request per kind and namespace (a LIST where
        there are several: :func:`workers.kube_many.read_many`), the requests in parallel."""
        found = read_many(self, cluster, refs)
        return {ref: _observation(cluster, ref, found[ref]) for ref in refs}

    def check_many(
        self,
        cluster: str,
        refs: Sequence[ResourceRef],
        role: Role,
        *,
        requested_at: Mapping[ResourceRef, str | None] | None = None,
    ) -> dict[ResourceRef, Check]:
        """:meth:`check` of every ref, read as :meth:`observe_many` reads; a missing object raises
        NotFoundError (the first in the order of ``refs``), as :meth:`check` does."""
        found, stamps = read_many(self, cluster, refs), requested_at or {}
        checks = {}
        for ref in refs:
            with located(cluster, ref):
                seen = found[ref]
                if seen is None:
                    raise not_found(cluster, ref)
                reached, detail = judge(ref.kind, seen[1], role, requested_at=stamps.get(ref))
                checks[ref] = Check(reached=reached, detail=detail)
        return checks

    def make_many(
        self,
        cluster: str,
        refs: Sequence[ResourceRef],
        role: Role,
        *,
        epoch: int,
        group: str = "",
        replicas: Mapping[str, int] | None = None,
        requested_at: Mapping[ResourceRef, str | None] | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> list[Change]:
        """:meth:`make_passive` or :meth:`make_active` of every ref, in fewer requests: the edits that
        do not depend on the object sent without a read, the others read together
        (:mod:`workers.kube_many`). ``changed`` of a write sent without a read is True."""
        return make_many(
            self,
            cluster,
            refs,
            role,
            stamp=(epoch, group),
            replicas=replicas or {},
            requested_at=requested_at or {},
            before_write=before_write,
        )

    def stop_jobs(self, cluster: str, ref: ResourceRef) -> Change:
        """Delete the running Jobs of CronJob ``ref`` (past the wait's deadline: never left running).

        Idempotent: Jobs that finished or are gone are left alone; ``changed`` says whether any was
        deleted. Pods follow their Job through background propagation.
        """
        with located(cluster, ref):
            if ref.kind != CRON_JOB:
                raise PermanentError(f"stop_jobs applies to CronJobs, not to {ref.kind}")
            _, cron = self.read(cluster, ref)
            uid = (cron.get("metadata") or {}).get("uid")
            listed = {a.get("uid") for a in (cron.get("status") or {}).get("active") or []}
            jobs = Target(
                cluster, JOBS.group, JOBS.versions[0], JOBS.plural, ref.namespace, None, f"Jobs of {ref}"
            )
            running = [
                job
                for job in self.clients.list(jobs)
                if not _finished(job)
                and (
                    job["metadata"].get("uid") in listed
                    or any(o.get("uid") == uid for o in job["metadata"].get("ownerReferences") or [])
                )
            ]
            deleted = []
            for job in running:
                name = job["metadata"]["name"]
                try:
                    self.clients.delete(
                        jobs.named(name, f"Job {ref.namespace}/{name}"), uid=job["metadata"].get("uid")
                    )
                except (NotFoundError, ConflictError):
                    continue  # gone already, or a new Job of the same name: not the one we saw running
                deleted.append(name)
            if deleted:
                log.warning("kube.jobs_deleted", cluster=cluster, obj=str(ref), jobs=deleted)
            detail = f"deleted running Jobs {', '.join(deleted)}" if deleted else "no running Jobs"
            return Change(cluster=cluster, ref=ref, action="stop_jobs", changed=bool(deleted), detail=detail)

    def preview(
        self,
        cluster: str,
        ref: ResourceRef,
        role: Role,
        *,
        replicas: int | None = None,
        requested_at: str | None = None,
    ) -> Change:
        """The change ``make_passive``/``make_active`` would make to ``ref`` now, without making it.

        Reads the object once and computes the same edit the effect would (``passive_edit`` or
        ``active_edit``); ``detail`` spells the edit out field by field, e.g. ``spec.replicas 3 -> 0;
        annotations +failover.hahomelabs.com/replicas=3``. ``changed=False`` when the object is
        already in the wanted form. Never writes (RBAC: get). The epoch annotation every real write
        also sets is not part of the detail: its value is the run's fencing token, unknown here.
        """
        with located(cluster, ref):
            _, obj = self.read(cluster, ref)
            if role is Role.PASSIVE:
                edit = passive_edit(ref.kind, obj)
            else:
                edit = active_edit(ref.kind, obj, replicas=replicas, requested_at=requested_at)
            action = f"make_{role.value}"
            if edit is None:
                return Change(
                    cluster=cluster, ref=ref, action=action, changed=False, detail=f"already {role.value}"
                )
            return Change(
                cluster=cluster, ref=ref, action=action, changed=True, detail=describe_edit(obj, edit)
            )

    # --- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _info(cluster: str, ref: ResourceRef) -> KindInfo:
        try:
            return kind_info(ref.kind)
        except UnknownKind as error:
            raise PermanentError(str(error), cluster=cluster, obj=str(ref)) from error
