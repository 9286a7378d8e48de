"""Where a Kubernetes request goes (:class:`Target`) and what its failure means (:func:`api_error`,
:func:`unreachable`): the API server's answers translated into :mod:`workers.errors` at the boundary
(always ``raise ... from`` the client's error), with ``cluster`` and ``obj`` set. Part of the
Kubernetes adapter (:mod:`workers.kube_client` sends the requests).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

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

Obj = dict[str, Any]  # an object as the API server returned it


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


def unreachable(target: Target, verb: str, error: Exception, note: str = "") -> ClusterUnreachable:
    """Refused, reset, timed out, protocol errors: with urllib3's retries off they arrive as is
    (a MaxRetryError only if someone turns retries back on)."""
    return ClusterUnreachable(
        f"cluster {target.cluster!r} did not answer {verb} {target.resource} "
        f"({type(error).__name__}: {error}){note}",
        cluster=target.cluster,
        obj=target.label or None,
    )
