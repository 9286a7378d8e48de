"""The connection half of the Kubernetes adapter: one client per cluster, discovery, error translation.

:class:`KubeClients` holds one ``ApiClient`` per cluster (a kubeconfig context, or the pod's own
service account for the cluster named ``in-cluster``), built on first use, cached and shared by
threads. What to write and when is :mod:`workers.kube`'s business.

**Retries per request, budgets per step.** Each request is sent again (tenacity, exponential backoff
with full jitter) when the answer says that the same request may well succeed a moment later: 429
(its ``Retry-After`` honoured when it is short), 5xx, a read timeout and a connection reset or cut
mid-request. It stops after ``retry_attempts`` attempts or once its time budget ``retry_seconds`` is
spent (each attempt's read timeout shrinks to what is left, so a request never outlasts its budget),
and then raises the translated error of its last attempt. Every retry is logged once
(``kube.request_retry``, attempt n of N). So a step that reads 18 objects does not fail because one
read of 18 was unlucky; the engine's step budget (``Timing.max_attempts``) counts failed *steps*.

Not retried here: a refused connection or a connect timeout (nothing reached a server: a lost site
must fail fast and the engine's policy in :mod:`fsm.unreachable` decides), a 429 whose ``Retry-After``
is longer than ``retry_after_max`` (the engine waits it out without holding a worker), 409 (the
adapter re-reads) and every other answer. Repeating a PATCH is safe: a read-modify-write carries the
resourceVersion it was computed from, so one that had applied before its answer was lost gets 409 and
the adapter re-reads and finds the object done; one sent without a read sets fields to fixed values,
which a second time changes nothing; a repeated DELETE (uid precondition) gets 404, a repeated Event
create 409 AlreadyExists. urllib3's own retries stay off, so that there is one retry loop.

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

import collections
import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from workers.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    TemporaryError,
)
from workers.kube_errors import Target, _retry_after, _status_body, api_error, unreachable
from workers.kube_limits import RateLimits

__all__ = ["KubeClients", "Obj", "RetryPolicy", "Target", "api_error", "unreachable"]

if TYPE_CHECKING:
    from workers.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
Obj = dict[str, Any]  # an object as the API server returned it, or a patch to send
Timeout = tuple[float, float]  # (connect, read) seconds of one attempt

IN_CLUSTER = "in-cluster"
FIELD_MANAGER = "failover-orchestrator"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


# --- retries per request ---------------------------------------------------------------------------

_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# The smallest read timeout worth another attempt when the budget is nearly spent.
_MIN_ATTEMPT_SECONDS = 0.5


def transient(error: BaseException) -> bool:
    """Whether sending the same request again may well succeed (see the module docstring)."""
    if isinstance(error, ApiException):
        return int(error.status or 0) in _RETRIED_STATUSES
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):  # NewConnectionError (refused) too
        return False
    if isinstance(error, urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ProtocolError):
        return True
    return isinstance(error, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected)


def _header_retry_after(error: BaseException) -> float | None:
    if not isinstance(error, ApiException):
        return None
    return _retry_after(error, _status_body(error))


def _what(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason or ''}".strip()
    return f"{type(error).__name__}: {error}"


def _reason(error: BaseException) -> str:
    """The short name of a retried failure, as counted in :attr:`KubeClients.retries`."""
    return str(error.status) if isinstance(error, ApiException) else type(error).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried: at most ``attempts`` attempts within ``seconds``, waiting
    ``random(0, min(backoff_max, backoff_initial * 2**n))`` between them (full jitter), or the server's
    ``Retry-After`` when it is longer and at most ``retry_after_max``."""

    seconds: float = 20.0
    attempts: int = 8
    backoff_initial: float = 0.2
    backoff_max: float = 2.0
    retry_after_max: float = 5.0

    @property
    def off(self) -> RetryPolicy:
        return replace(self, attempts=1)


class _Attempts:
    """One request's retry loop (tenacity): the budget, the waits and the log lines."""

    def __init__(self, policy: RetryPolicy, target: Target, verb: str, timeout: Timeout) -> None:
        self.policy = policy
        self.target = target
        self.verb = verb
        self.timeout = timeout
        self.started = time.monotonic()
        self.attempts = 0
        self.retried: list[str] = []
        self._backoff = wait_random_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)

    def left(self) -> float:
        return self.policy.seconds - (time.monotonic() - self.started)

    def attempt_timeout(self) -> Timeout:
        """The connect/read timeouts of the next attempt: the read timeout never outlasts the budget."""
        connect, read = self.timeout
        return (connect, min(read, max(self.left(), _MIN_ATTEMPT_SECONDS)))

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        backoff = float(self._backoff(state))
        retry_after = _header_retry_after(error) if error is not None else None
        return max(backoff, retry_after or 0.0)

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.policy.attempts:
            return True
        error = state.outcome.exception() if state.outcome else None
        retry_after = _header_retry_after(error) if error is not None else None
        if retry_after is not None and retry_after > self.policy.retry_after_max:
            return True  # a long Retry-After: the engine waits it out without holding a worker
        upcoming = state.upcoming_sleep or 0.0
        return self.left() - upcoming < _MIN_ATTEMPT_SECONDS

    def _log(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        what = _what(error) if error is not None else "?"
        self.retried.append(_reason(error) if error is not None else "?")
        log.warning(
            "kube.request_retry",
            cluster=self.target.cluster,
            verb=self.verb,
            resource=self.target.resource,
            obj=self.target.label or None,
            attempt=f"{state.attempt_number} of {self.policy.attempts}",
            error=what,
            next_action=f"retrying in {delay:.2f}s ({max(0.0, self.left()):.1f}s of budget left)",
        )

    def run(self, send: Callable[[Timeout], T]) -> T:
        def attempt() -> T:
            self.attempts += 1
            return send(self.attempt_timeout())

        retrying = Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(transient),
            before_sleep=self._log,
            reraise=True,
        )
        return retrying(attempt)

    def note(self) -> str:
        """What the retries were, for the message of the error that outlasted them."""
        if self.attempts <= 1:
            return ""
        return f" (after {self.attempts} attempts in {time.monotonic() - self.started:.1f}s)"


# --- clients ---------------------------------------------------------------------------------------

DEFAULT_QPS = 200.0
DEFAULT_BURST = 400


def _count_throttle(cluster: str, seconds: float) -> None:
    """The Prometheus counters of the client-side rate limit (imported late: metrics are optional)."""
    from workers.metrics import default_metrics

    metrics = default_metrics()
    metrics.kube_throttled.labels(cluster=cluster).inc()
    metrics.kube_throttle_seconds.labels(cluster=cluster).inc(seconds)


def _obj(value: Any) -> Obj:
    if isinstance(value, dict):
        return cast(Obj, value)
    raise TemporaryError(f"unexpected answer from the API server: {type(value).__name__}")


# How often a client re-applies its kubeconfig's credentials (see refresh_at_most_every).
CREDENTIALS_CHECK_SECONDS = 10.0


def refresh_at_most_every(
    configuration: Any, seconds: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """Let ``configuration``'s credentials hook run at most once per ``seconds``.

    The client calls the hook the kubeconfig loader installs before *every* request; it checks
    whether the credentials (an exec plugin's or OIDC token) have expired and re-applies the whole
    kubeconfig to the configuration, which re-reads the process's proxy environment: 6 % of a worker's
    CPU at 1,000 groups (issue 15). The loader counts a token as expired 5 minutes before it does, so
    checking every ``seconds`` (10 s) instead of every request refreshes it just as surely."""
    hook = getattr(configuration, "refresh_api_key_hook", None)
    if hook is None:
        return
    last = [-float("inf")]

    def refresh(target: Any) -> None:
        now = clock()
        if now - last[0] >= seconds:
            last[0] = now
            hook(target)
            target.refresh_api_key_hook = refresh  # the hook installs itself again on every run

    configuration.refresh_api_key_hook = refresh


class KubeClients:
    """One official-client ``ApiClient`` per cluster, built lazily, cached and shared by threads.

    Args:
        kubeconfig: the kubeconfig file whose contexts name the clusters (None: ``$KUBECONFIG`` or
            ``~/.kube/config``). The cluster named ``in-cluster`` uses the pod's service account.
        connect_timeout/read_timeout: seconds, per attempt of a request.
        discovery_ttl: how long the served API versions of a cluster are trusted.
        retry: how each request is retried (:class:`RetryPolicy`; ``RetryPolicy().off`` for none).
        limits: the client-side rate limits per cluster (:mod:`workers.kube_limits`); every attempt
            of every request takes a token first. Default: 200 requests/s, bursts of 400.
    """

    def __init__(
        self,
        kubeconfig: str | Path | None = None,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 15.0,
        discovery_ttl: float = 300.0,
        retry: RetryPolicy | None = None,
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits if limits is not None else RateLimits(DEFAULT_QPS, DEFAULT_BURST)
        self.kubeconfig = str(kubeconfig) if kubeconfig is not None else None
        self.timeout: Timeout = (connect_timeout, read_timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        # Requests sent again, by the reason of the failed attempt (``429``, ``ReadTimeoutError``, ...).
        self.retries: collections.Counter[str] = collections.Counter()
        self.discovery_ttl = discovery_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._discovery: dict[str, tuple[float, dict[str, tuple[str, ...]]]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeClients:
        """The clients of ``settings``: kubeconfig, timeouts and the per-request retry budget."""
        return cls(
            settings.kubeconfig,
            connect_timeout=settings.kube_connect_timeout,
            read_timeout=settings.kube_read_timeout,
            retry=RetryPolicy(seconds=settings.kube_retry_seconds),
            limits=RateLimits(settings.kube_qps, settings.kube_burst, on_wait=_count_throttle),
        )

    def api_client(self, cluster: str) -> Any:
        with self._lock:
            api = self._clients.get(cluster)
            if api is None:
                api = self._clients[cluster] = self._build(cluster)
            return api

    def _build(self, cluster: str) -> Any:
        configuration = k8s.Configuration()
        # urllib3 would otherwise retry (and sleep through any Retry-After) with its own counts;
        # :meth:`send` is the one retry loop, bounded in time and logged.
        configuration.retries = False
        loader: Any = k8s_config  # its functions are unannotated
        try:
            if cluster == IN_CLUSTER:
                loader.load_incluster_config(client_configuration=configuration)
                return k8s.ApiClient(configuration=configuration)
            api = loader.new_client_from_config(
                config_file=self.kubeconfig,
                context=cluster,
                persist_config=False,
                client_configuration=configuration,
            )
            refresh_at_most_every(configuration, CREDENTIALS_CHECK_SECONDS)
            return api
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

    def send(self, target: Target, verb: str, request: Callable[[Timeout], T]) -> T:
        """``request(timeout)`` with the per-request retries; the last failure translated (see the
        module docstring). Only this method talks to the API server."""
        attempts = _Attempts(self.retry, target, verb, self.timeout)

        def limited(timeout: Timeout) -> T:
            self.limits.take(target.cluster)  # every attempt is a request the server sees
            return request(timeout)

        try:
            return attempts.run(limited)
        except ApiException as error:
            mapped = api_error(error, target, verb)
            mapped.message += attempts.note()
            raise mapped from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise unreachable(target, verb, error, attempts.note()) from error
        finally:
            if attempts.retried:
                with self._lock:
                    self.retries.update(attempts.retried)

    # --- discovery ------------------------------------------------------------------------------

    def served_versions(self, cluster: str, group: str) -> tuple[str, ...]:
        """The versions of ``group`` the cluster serves (preferred first), from cached discovery."""
        with self._lock:
            cached = self._discovery.get(cluster)
        if cached is None or self._clock() - cached[0] > self.discovery_ttl:
            # No label: the error is about the object that needed discovery (``_located`` names it).
            target = Target(cluster, "", "", "apis", "", None, "")
            apis = k8s.ApisApi(self.api_client(cluster))
            found = self.send(target, "get", lambda timeout: apis.get_api_versions(_request_timeout=timeout))
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
        call = getattr(api, method)
        try:
            return self.send(
                target, verb, lambda timeout: call(*collection, *args, _request_timeout=timeout, **kwargs)
            )
        except PermanentError as error:
            cause = error.__cause__
            missing_api = isinstance(cause, ApiException) and cause.status == 404
            if missing_api and not isinstance(error, NotFoundError):
                self.forget_discovery(target.cluster)  # its CRD may have gone: look again next time
            raise

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

    def list_cluster(self, target: Target) -> list[Obj]:
        """The items of a cluster-scoped collection (``target.namespace`` unused)."""
        api = k8s.CustomObjectsApi(self.api_client(target.cluster))
        found = self.send(
            target,
            "list",
            lambda timeout: api.list_cluster_custom_object(
                target.group, target.version, target.plural, _request_timeout=timeout
            ),
        )
        return [_obj(item) for item in _obj(found).get("items") or []]

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
        core = k8s.CoreV1Api(self.api_client(cluster))
        try:
            self.send(
                target,
                "create",
                lambda timeout: core.create_namespaced_event(namespace, body, _request_timeout=timeout),
            )
        except ConflictError as error:
            cause = error.__cause__
            if isinstance(cause, ApiException) and _status_body(cause).get("reason") == "AlreadyExists":
                return False
            raise
        return True

    def event_names(self, cluster: str, namespace: str, *, field_selector: str) -> set[str]:
        target = Target(cluster, "", "v1", "events", namespace, None, f"Events in {namespace}")
        core = k8s.CoreV1Api(self.api_client(cluster))
        found = self.send(
            target,
            "list",
            lambda timeout: core.list_namespaced_event(
                namespace, field_selector=field_selector, _request_timeout=timeout
            ),
        )
        return {str(item.metadata.name) for item in found.items or ()}
