"""The connection half of the Kubernetes adapter: one client per cluster, discovery, error translation.

:class:`KubeClients` holds one ``ApiClient`` per cluster (a kubeconfig context, or the pod's own
service account for the cluster named ``in-cluster``), built on first use, cached and shared by
threads; urllib3's own retries are off and every request has a short connect/read timeout, so that a
slow or dead API server surfaces at once as :class:`~workers.errors.ClusterUnreachable` and the
engine's backoff decides what happens next. What to write and when is :mod:`workers.kube`'s business.

Every object is read and written as a plain dict through ``CustomObjectsApi``, which builds the same
URLs as the typed APIs for any named group (``apps``, ``batch`` and ``networking.k8s.io`` included)
and sends JSON merge patches: their semantics are the same for every kind, unlike strategic merge.

Errors are translated here, at the boundary, into :mod:`workers.errors` (always ``raise ... from``
the client's error), with ``cluster`` and ``obj`` set: 404 of the object -> NotFoundError; 404 of
the kind -> PermanentError naming the missing API group/version; 403 -> ForbiddenError naming the verb
and resource RBAC lacks; 409 -> ConflictError; 429 -> TemporaryError with ``retry_after``; 5xx ->
TemporaryError; refused, reset, timed out -> ClusterUnreachable.
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

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from workers.errors import (
    ClusterUnreachable,
    ConflictError,
    Fenced,
    ForbiddenError,
    NotFoundError,
    OrchestratorError,
    PermanentError,
    TemporaryError,
)

Obj = dict[str, Any]  # an object as the API server returned it, or a patch to send

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


# What the fence policies of deploy/fencing put in front of every denial they make.
_FENCED = "denied request: fenced:"


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
    if status in (403, 422) and _FENCED in message:
        # The cluster's admission policy (deploy/fencing) refused a write under a stale epoch.
        return Fenced(f"{cluster!r} refused {verb} of {target.label}: {message}", cluster=cluster, obj=obj)
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
