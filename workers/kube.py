"""The :class:`~workers.ports.ClusterEffects` port on the official ``kubernetes`` client.

:class:`KubeClients` holds one ``ApiClient`` per cluster (a kubeconfig context, or the pod's own
service account for the cluster named ``in-cluster``), built on first use, cached and shared by
threads; urllib3's own retries are off and every request has a short connect/read timeout, so that a
slow or dead API server surfaces at once as :class:`~workers.errors.ClusterUnreachable` and the
engine's backoff decides what happens next. :class:`KubeEffects` implements the port with the
per-kind semantics of :mod:`workers.kube_kinds` (docs/API.md's "active/passive" table).

Every object is read and written as a plain dict through ``CustomObjectsApi``, which builds the same
URLs as the typed APIs for any named group (``apps``, ``batch`` and ``networking.k8s.io`` included)
and sends JSON merge patches: their semantics are the same for every kind, unlike strategic merge.

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
stop_jobs          idempotent: list the namespace's Jobs, delete the CronJob's running ones
                   (background propagation, uid precondition); a Job already gone is skipped.
                   RBAC: get cronjobs; list, delete jobs.
discovery          ``/apis``, cached per cluster (for VirtualService: ``networking.istio.io/v1`` else
                   ``v1beta1``); forgotten when a request finds its API gone. RBAC: none (discovery).
=================  ===================================================================================

Errors are translated here, at the boundary, into :mod:`workers.errors` (always ``raise ... from``
the client's error), with ``cluster`` and ``obj`` set: 404 of the object -> NotFoundError; 404 of
the kind -> PermanentError naming the missing API group/version; 403 -> ForbiddenError naming the verb
and resource RBAC lacks; 409 (after the retries) -> ConflictError; 429 -> TemporaryError with
``retry_after``; 5xx -> TemporaryError; refused, reset, timed out -> ClusterUnreachable.

``kubernetes`` may be imported only by ``workers/kube*.py`` (``workers.kube_kinds`` does not even need
it) and by the watcher; an import-linter contract holds the rest of the product to that.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from fsm.models import ANNOTATION_EPOCH, ResourceRef
from workers.errors import (
    ClusterUnreachable,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OrchestratorError,
    PermanentError,
    TemporaryError,
)
from workers.kube_kinds import (
    CRON_JOB,
    JOBS,
    Edit,
    Obj,
    active_edit,
    annotations_of,
    condition,
    guess_role,
    judge,
    kind_info,
    passive_edit,
    replica_count,
)
from workers.ports import Change, Check, Observation, Role

log = structlog.get_logger(__name__)

IN_CLUSTER = "in-cluster"
FIELD_MANAGER = "failover-orchestrator"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Target:
    """One object (or, without ``name``, a collection) of one cluster, and how to name it in errors."""

    cluster: str
    group: str
    version: str
    plural: str
    namespace: str
    name: str | None
    label: str

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def named(self, name: str, label: str) -> Target:
        return replace(self, name=name, label=label)


# --- error translation ---------------------------------------------------------------------------

_FORBIDDEN = re.compile(
    r'cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"'
)


def _status_body(error: ApiException) -> Obj:
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(error: ApiException, body: Obj) -> float | None:
    header = (error.headers or {}).get("Retry-After")
    if header is not None:
        with contextlib.suppress(TypeError, ValueError):
            return max(0.0, float(header))
    seconds = (body.get("details") or {}).get("retryAfterSeconds")
    return float(seconds) if isinstance(seconds, int | float) else None


def api_error(error: ApiException, target: Target, verb: str) -> OrchestratorError:
    """The :mod:`workers.errors` class for an API server's answer to ``verb`` on ``target``."""
    status = int(error.status or 0)
    body = _status_body(error)
    message = str(body.get("message") or error.reason or "").strip()
    cluster, obj = target.cluster, target.label or None
    if status == 0:  # the client reports TLS failures this way: nothing was answered
        return ClusterUnreachable(f"cluster {cluster!r} did not answer: {message}", cluster=cluster, obj=obj)
    if status == 404:
        details = body.get("details") or {}
        if target.name is not None and details.get("name") == target.name:
            return NotFoundError(
                f"{target.label} not found on cluster {target.cluster!r}", cluster=cluster, obj=obj
            )
        return PermanentError(
            f"{target.resource} is not served by cluster {target.cluster!r}: API {target.group_version} "
            "is missing (is its CRD installed?)",
            cluster=cluster,
            obj=obj,
        )
    if status == 403:
        found = _FORBIDDEN.search(message)
        verb_, resource, group = (
            (found["verb"], found["resource"], found["group"])
            if found
            else (verb, target.plural, target.group)
        )
        scope = f"in namespace {target.namespace!r}" if target.namespace else "at cluster scope"
        return ForbiddenError(
            f"RBAC forbids {verb_} on {resource} (API group {group!r}) {scope}: {message}",
            cluster=cluster,
            obj=obj,
        )
    if status == 409:
        return ConflictError(f"{verb} conflicted: {message}", cluster=cluster, obj=obj)
    if status == 429:
        return TemporaryError(
            f"throttled (429): {message}", retry_after=_retry_after(error, body), cluster=cluster, obj=obj
        )
    if status >= 500:
        return TemporaryError(
            f"server error {status} on {verb}: {message}",
            retry_after=_retry_after(error, body),
            cluster=cluster,
            obj=obj,
        )
    if status == 401:
        return PermanentError(
            f"cluster {target.cluster!r} rejected our credentials (401): {message}", cluster=cluster, obj=obj
        )
    return PermanentError(
        f"{verb} {target.resource} refused with {status}: {message}", cluster=cluster, obj=obj
    )


def unreachable(target: Target, verb: str, error: Exception) -> ClusterUnreachable:
    """Refused, reset, timed out, protocol errors: with urllib3's retries off they arrive as is
    (a MaxRetryError only if someone turns retries back on)."""
    return ClusterUnreachable(
        f"cluster {target.cluster!r} did not answer {verb} {target.resource} "
        f"({type(error).__name__}: {error})",
        cluster=target.cluster,
        obj=target.label or None,
    )


@contextlib.contextmanager
def translated(target: Target, verb: str) -> Iterator[None]:
    """Turn the client's and urllib3's exceptions into ours, chained to the original."""
    try:
        yield
    except ApiException as error:
        raise api_error(error, target, verb) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise unreachable(target, verb, error) from error


@contextlib.contextmanager
def _located(cluster: str, ref: ResourceRef) -> Iterator[None]:
    """Make sure every error leaving the adapter says which cluster and object it is about."""
    try:
        yield
    except OrchestratorError as error:
        error.cluster = error.cluster or cluster
        error.obj = error.obj or str(ref)
        raise


# --- clients -------------------------------------------------------------------------------------


def _obj(value: Any) -> Obj:
    if isinstance(value, dict):
        return cast(Obj, value)
    raise TemporaryError(f"unexpected answer from the API server: {type(value).__name__}")


class KubeClients:
    """One official-client ``ApiClient`` per cluster, built lazily, cached and shared by threads.

    Args:
        kubeconfig: the kubeconfig file whose contexts name the clusters (None: ``$KUBECONFIG`` or
            ``~/.kube/config``). The cluster named ``in-cluster`` uses the pod's service account.
        connect_timeout/read_timeout: seconds, per request.
        discovery_ttl: how long the served API versions of a cluster are trusted.
    """

    def __init__(
        self,
        kubeconfig: str | Path | None = None,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 15.0,
        discovery_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kubeconfig = str(kubeconfig) if kubeconfig is not None else None
        self.timeout = (connect_timeout, read_timeout)
        self.discovery_ttl = discovery_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._discovery: dict[str, tuple[float, dict[str, tuple[str, ...]]]] = {}

    def api_client(self, cluster: str) -> Any:
        with self._lock:
            api = self._clients.get(cluster)
            if api is None:
                api = self._clients[cluster] = self._build(cluster)
            return api

    def _build(self, cluster: str) -> Any:
        configuration = k8s.Configuration()
        # urllib3 would otherwise retry (and sleep through Retry-After) behind our back; the
        # engine's backoff, which sees the error, decides instead.
        configuration.retries = False
        loader: Any = k8s_config  # its functions are unannotated
        try:
            if cluster == IN_CLUSTER:
                loader.load_incluster_config(client_configuration=configuration)
                return k8s.ApiClient(configuration=configuration)
            return loader.new_client_from_config(
                config_file=self.kubeconfig,
                context=cluster,
                persist_config=False,
                client_configuration=configuration,
            )
        except (ConfigException, OSError, ValueError) as error:
            raise PermanentError(
                f"no usable connection settings for cluster {cluster!r} "
                f"(kubeconfig {self.kubeconfig or 'default'}): {error}",
                cluster=cluster,
            ) from error

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self._discovery.clear()
        for api in clients:
            api.close()

    # --- discovery ------------------------------------------------------------------------------

    def served_versions(self, cluster: str, group: str) -> tuple[str, ...]:
        """The versions of ``group`` the cluster serves (preferred first), from cached discovery."""
        with self._lock:
            cached = self._discovery.get(cluster)
        if cached is None or self._clock() - cached[0] > self.discovery_ttl:
            # No label: the error is about the object that needed discovery (``_located`` names it).
            target = Target(cluster, "", "", "apis", "", None, "")
            with translated(target, "get"):
                found = k8s.ApisApi(self.api_client(cluster)).get_api_versions(_request_timeout=self.timeout)
            served = {
                str(g.name): tuple(str(v.version) for v in g.versions or ()) for g in found.groups or ()
            }
            cached = (self._clock(), served)
            with self._lock:
                self._discovery[cluster] = cached
        return cached[1].get(group, ())

    def forget_discovery(self, cluster: str) -> None:
        with self._lock:
            self._discovery.pop(cluster, None)

    # --- objects as dicts -----------------------------------------------------------------------

    def _call(self, target: Target, verb: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``CustomObjectsApi.<method>`` on ``target``'s collection, translating its errors."""
        api = k8s.CustomObjectsApi(self.api_client(target.cluster))
        collection = (target.group, target.version, target.namespace, target.plural)
        try:
            return getattr(api, method)(*collection, *args, _request_timeout=self.timeout, **kwargs)
        except ApiException as error:
            mapped = api_error(error, target, verb)
            if error.status == 404 and not isinstance(mapped, NotFoundError):
                self.forget_discovery(target.cluster)  # its CRD may have gone: look again next time
            raise mapped from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise unreachable(target, verb, error) from error

    def get(self, target: Target) -> Obj:
        return _obj(self._call(target, "get", "get_namespaced_custom_object", target.name))

    def patch(self, target: Target, body: Obj | list[Obj], *, subresource: str | None = None) -> Obj:
        """A merge patch (``body`` a dict) or a JSON patch (``body`` a list of operations)."""
        method = "patch_namespaced_custom_object" + ("_status" if subresource == "status" else "")
        content_type = JSON_PATCH if isinstance(body, list) else MERGE_PATCH
        return _obj(
            self._call(
                target,
                "patch",
                method,
                target.name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=content_type,
            )
        )

    def list(self, target: Target, *, field_selector: str | None = None) -> list[Obj]:
        found = self._call(target, "list", "list_namespaced_custom_object", field_selector=field_selector)
        return [_obj(item) for item in _obj(found).get("items") or []]

    def delete(self, target: Target, *, uid: str | None = None) -> None:
        """Delete with background propagation (dependents go after the object), ``uid`` as precondition."""
        options = k8s.V1DeleteOptions(
            propagation_policy="Background",
            preconditions=k8s.V1Preconditions(uid=uid) if uid else None,
        )
        self._call(target, "delete", "delete_namespaced_custom_object", target.name, body=options)

    # --- core/v1 Events -------------------------------------------------------------------------

    def create_event(self, cluster: str, namespace: str, event: Obj) -> bool:
        """Create a core/v1 Event from its JSON form; False when one of that name already exists."""
        name = str((event.get("metadata") or {}).get("name"))
        target = Target(cluster, "", "v1", "events", namespace, name, f"Event {namespace}/{name}")
        body: Any = k8s.CoreV1Event.from_dict(event)
        try:
            k8s.CoreV1Api(self.api_client(cluster)).create_namespaced_event(
                namespace, body, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 409 and _status_body(error).get("reason") == "AlreadyExists":
                return False
            raise api_error(error, target, "create") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise unreachable(target, "create", error) from error
        return True

    def event_names(self, cluster: str, namespace: str, *, field_selector: str) -> set[str]:
        target = Target(cluster, "", "v1", "events", namespace, None, f"Events in {namespace}")
        with translated(target, "list"):
            found = k8s.CoreV1Api(self.api_client(cluster)).list_namespaced_event(
                namespace, field_selector=field_selector, _request_timeout=self.timeout
            )
        return {str(item.metadata.name) for item in found.items or ()}


# --- the port --------------------------------------------------------------------------------------


def _fenced(edit: Edit, obj: Obj, epoch: int) -> Obj:
    """``edit``'s merge patch, conditioned on the resourceVersion read and stamped with the epoch."""
    patch = json.loads(json.dumps(edit.patch))
    metadata = patch.setdefault("metadata", {})
    metadata["resourceVersion"] = (obj.get("metadata") or {}).get("resourceVersion")
    metadata.setdefault("annotations", {})[ANNOTATION_EPOCH] = str(epoch)
    return cast(Obj, patch)


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
    """

    def __init__(
        self,
        clients: KubeClients | None = None,
        *,
        kubeconfig: str | Path | None = None,
        conflict_attempts: int = 5,
    ) -> None:
        self.clients = clients if clients is not None else KubeClients(kubeconfig)
        self.conflict_attempts = conflict_attempts

    def close(self) -> None:
        self.clients.close()

    def target(self, cluster: str, ref: ResourceRef) -> Target:
        """Where ``ref`` is served on ``cluster`` (the first of the kind's versions that is served)."""
        info = kind_info(ref.kind)
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
            if len(kind_info(ref.kind).versions) == 1 or not _not_served(error):
                raise
        target = self.target(cluster, ref)
        return target, self.clients.get(target)

    # --- ClusterEffects ---------------------------------------------------------------------------

    def make_passive(self, cluster: str, ref: ResourceRef, *, epoch: int) -> Change:
        with _located(cluster, ref):
            return self._apply(cluster, ref, Role.PASSIVE, epoch, lambda obj: passive_edit(ref.kind, obj))

    def make_active(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        replicas: int | None = None,
        requested_at: str | None = None,
    ) -> Change:
        with _located(cluster, ref):
            return self._apply(
                cluster,
                ref,
                Role.ACTIVE,
                epoch,
                lambda obj: active_edit(ref.kind, obj, replicas=replicas, requested_at=requested_at),
            )

    def check(self, cluster: str, ref: ResourceRef, role: Role, *, requested_at: str | None = None) -> Check:
        with _located(cluster, ref):
            _, obj = self.read(cluster, ref)
            reached, detail = judge(ref.kind, obj, role, requested_at=requested_at)
            return Check(reached=reached, detail=detail)

    def observe(self, cluster: str, ref: ResourceRef) -> Observation:
        with _located(cluster, ref):
            try:
                _, obj = self.read(cluster, ref)
            except NotFoundError as error:
                return Observation(exists=False, detail=error.message)
            meta = obj.get("metadata") or {}
            epoch = annotations_of(obj).get(ANNOTATION_EPOCH)
            return Observation(
                exists=True,
                role=guess_role(ref.kind, obj),
                replicas=replica_count(ref.kind, obj),
                detail=f"generation {meta.get('generation')}, epoch {epoch or '(none)'}",
            )

    def stop_jobs(self, cluster: str, ref: ResourceRef) -> Change:
        """Delete the running Jobs of CronJob ``ref`` (past the wait's deadline: never left running).

        Idempotent: Jobs that finished or are gone are left alone; ``changed`` says whether any was
        deleted. Pods follow their Job through background propagation.
        """
        with _located(cluster, ref):
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
        with _located(cluster, ref):
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

    def _apply(
        self, cluster: str, ref: ResourceRef, role: Role, epoch: int, edit_of: Callable[[Obj], Edit | None]
    ) -> Change:
        """Read, compute the edit, patch conditioned on the resourceVersion read; on 409, again."""
        action = f"make_{role.value}"
        conflict: ConflictError | None = None
        for attempt in range(1, self.conflict_attempts + 1):
            target, obj = self.read(cluster, ref)
            edit = edit_of(obj)
            if edit is None:
                return Change(
                    cluster=cluster, ref=ref, action=action, changed=False, detail=f"already {role.value}"
                )
            try:
                self.clients.patch(target, _fenced(edit, obj, epoch))
            except ConflictError as error:
                conflict = error
                log.info(
                    "kube.patch_conflict",
                    cluster=cluster,
                    obj=str(ref),
                    action=action,
                    attempt=f"{attempt} of {self.conflict_attempts}",
                    next="re-read and retry" if attempt < self.conflict_attempts else "give up",
                )
                continue
            log.info(
                "kube.changed", cluster=cluster, obj=str(ref), action=action, detail=edit.detail, epoch=epoch
            )
            return Change(cluster=cluster, ref=ref, action=action, changed=True, detail=edit.detail)
        raise ConflictError(
            f"{ref} kept changing under us: {self.conflict_attempts} patches in a row got 409 Conflict",
            cluster=cluster,
            obj=str(ref),
        ) from conflict
