"""The producers' Kubernetes client: one :class:`ClusterClient` per kubeconfig context.

The watcher, the health checker and ``failoverctl submit`` read Failover and FailoverGroup objects,
write their ``status`` through the status subresource, create Failover objects, and read the objects a
group references. This is the producers' only home of the official ``kubernetes`` client; the engine's
adapter (``workers.kube``) is separate, because producers may only use the narrow ``workers.api``.

SDK errors are translated here, at the boundary, into :mod:`workers.errors` (chained with ``from``):
404 NotFoundError, 409 ConflictError, 403 ForbiddenError, 410 :class:`ResourceGone`, 429/5xx
TemporaryError honouring ``Retry-After``, a refused or cut connection ClusterUnreachable.

Each request is retried a few times by urllib3 (:class:`ProducerRetry`) when a moment later it may
well succeed: 429 and 5xx answers and read timeouts or resets, with exponential backoff and jitter
and a short ``Retry-After`` honoured, on every method but POST (a create whose answer was lost
would come back as 409). A refused or timed-out connect is not retried: a site that does not answer
is reported at once, and the callers decide with their own backoff.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.util.retry import Retry

from fsm.kinds import FAILOVER_GROUPS as FAILOVER_GROUPS  # noqa: PLC0414 (re-exported)
from fsm.kinds import FAILOVERS as FAILOVERS  # noqa: PLC0414
from fsm.kinds import KINDS, KindInfo
from workers.errors import (
    ClusterUnreachable,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OrchestratorError,
    PermanentError,
    TemporaryError,
)

Obj = dict[str, Any]


class ResourceGone(TemporaryError):
    """410 Gone: the watch's resourceVersion is older than the server's history. Relist."""


def _retry_after(error: ApiException) -> float | None:
    headers = error.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate(error: Exception, *, cluster: str, what: str) -> OrchestratorError:
    """Our error for an SDK error; ``what`` says what was tried (``list failovers``)."""
    if isinstance(error, ApiException):
        status = error.status or 0
        text = f"{what}: {status} {error.reason or ''}".strip()
        if status == 404:
            return NotFoundError(text, cluster=cluster)
        if status == 409:
            return ConflictError(text, cluster=cluster)
        if status == 410:
            return ResourceGone(text, cluster=cluster)
        if status == 403:
            return ForbiddenError(text, cluster=cluster)
        if status == 429 or status >= 500:
            return TemporaryError(text, cluster=cluster, retry_after=_retry_after(error))
        return PermanentError(text, cluster=cluster)
    if isinstance(error, urllib3.exceptions.HTTPError | OSError):
        return ClusterUnreachable(f"{what}: {type(error).__name__}: {error}", cluster=cluster)
    return PermanentError(f"{what}: {type(error).__name__}: {error}", cluster=cluster)


def _kubeconfig_problem(kubeconfig: str | Path | None, error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if kubeconfig is not None and not Path(kubeconfig).is_file():
        text = "no such file"
    elif not isinstance(error, ConfigException | OSError):
        text = f"not a valid kubeconfig: {type(error).__name__}: {text}"[:400]
    where = kubeconfig or "~/.kube/config"
    return f"kubeconfig {where}: {text}; give --kubeconfig FILE or set FAILOVER_KUBECONFIG"


def kubeconfig_contexts(kubeconfig: str | Path | None) -> list[str]:
    """The context names of ``kubeconfig`` (``~/.kube/config`` when None)."""
    try:
        contexts, _current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
    except Exception as error:  # ConfigException, OSError, a YAML error, a malformed entry
        raise PermanentError(_kubeconfig_problem(kubeconfig, error)) from error
    return [c["name"] for c in contexts or []]


def current_context(kubeconfig: str | Path | None) -> str | None:
    try:
        _contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
    except Exception as error:  # ConfigException, OSError, a YAML error, a malformed entry
        raise PermanentError(_kubeconfig_problem(kubeconfig, error)) from error
    return str(current["name"]) if current else None


class ProducerRetry(Retry):
    """urllib3's Retry with ``Retry-After`` capped: a longer wait is the caller's to make."""

    RETRY_AFTER_MAX = 5.0

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.RETRY_AFTER_MAX)


def request_retries() -> Retry:
    """How the producers' requests are retried (see the module docstring): at most 3 retries."""
    return ProducerRetry(
        total=3,
        connect=0,
        read=3,
        status=3,
        other=2,
        redirect=0,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=Retry.DEFAULT_ALLOWED_METHODS | {"PATCH"},
        backoff_factor=0.2,
        backoff_max=2.0,
        backoff_jitter=0.2,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer is translated as usual
    )


class ClusterClient:
    """One cluster (kubeconfig context). Thread-safe for calls; one watch at a time per instance."""

    def __init__(
        self,
        name: str,
        api_client: client.ApiClient,
        *,
        connect_timeout: float = 3.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._response: Any = None
        self._stopped: list[Any] = []

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | Path | None, context: str, **options: float) -> ClusterClient:
        configuration = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig else None,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except Exception as error:  # ConfigException, OSError, a YAML error, a malformed entry
            raise PermanentError(f"context {context!r}: {_kubeconfig_problem(kubeconfig, error)}") from error
        # A few quick retries of what may pass a moment later; never of a connect that failed.
        configuration.retries = request_retries()
        return cls(context, client.ApiClient(configuration=configuration), **options)

    def close(self) -> None:
        self.stop_watch()
        self.api_client.close()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"ClusterClient({self.name!r})"

    @property
    def _timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.request_timeout)

    def _fail(self, error: Exception, what: str) -> NoReturn:
        raise translate(error, cluster=self.name, what=what) from error

    # --- custom objects ------------------------------------------------------------------------

    def list(
        self, resource: KindInfo, namespace: str | None = None, *, label_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        """Every object of ``resource`` (all namespaces unless given) and the list's resourceVersion."""
        what = f"list {resource.plural}"
        kwargs: dict[str, Any] = {"_request_timeout": self._timeout}
        if label_selector:
            kwargs["label_selector"] = label_selector
        try:
            if namespace:
                body = self.custom.list_namespaced_custom_object(
                    resource.group, resource.versions[0], namespace, resource.plural, **kwargs
                )
            else:
                body = self.custom.list_cluster_custom_object(
                    resource.group, resource.versions[0], resource.plural, **kwargs
                )
        except Exception as error:
            self._fail(error, what)
        listed = _obj(body)
        return list(listed.get("items") or []), str((listed.get("metadata") or {}).get("resourceVersion", ""))

    def get(self, resource: KindInfo, namespace: str, name: str) -> Obj:
        """One object; NotFoundError when missing (a kind served at an older version is tried next)."""
        last: Exception | None = None
        for version in resource.versions:
            try:
                body = self.custom.get_namespaced_custom_object(
                    resource.group,
                    version,
                    namespace,
                    resource.plural,
                    name,
                    _request_timeout=self._timeout,
                )
                return _obj(body)
            except ApiException as error:
                if error.status != 404:
                    self._fail(error, f"get {resource.kind} {namespace}/{name}")
                last = error
            except Exception as error:
                self._fail(error, f"get {resource.kind} {namespace}/{name}")
        assert last is not None
        self._fail(last, f"get {resource.kind} {namespace}/{name}")

    def find(self, resource: KindInfo, namespace: str, name: str) -> Obj | None:
        """Like :meth:`get`, but None when the object does not exist."""
        try:
            return self.get(resource, namespace, name)
        except NotFoundError:
            return None

    def create(self, resource: KindInfo, namespace: str, body: Mapping[str, Any]) -> Obj:
        what = f"create {resource.kind} in {namespace}"
        try:
            created = self.custom.create_namespaced_custom_object(
                resource.group,
                resource.versions[0],
                namespace,
                resource.plural,
                dict(body),
                _request_timeout=self._timeout,
            )
        except Exception as error:
            self._fail(error, what)
        return _obj(created)

    def patch_status(
        self,
        resource: KindInfo,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> Obj:
        """Merge-patch ``status`` through the status subresource; 409 if ``resource_version`` moved on."""
        body: Obj = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        what = f"patch {resource.kind} {namespace}/{name} status"
        try:
            patched = self.custom.patch_namespaced_custom_object_status(
                resource.group,
                resource.versions[0],
                namespace,
                resource.plural,
                name,
                body,
                _request_timeout=self._timeout,
            )
        except Exception as error:
            self._fail(error, what)
        return _obj(patched)

    def create_event(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a core/v1 Event (its JSON form); False when one of that name exists already (409)."""
        what = f"create Event {namespace}/{(body.get('metadata') or {}).get('name')}"
        event: Any = dict(body)  # the client serialises a dict as it is
        try:
            self.core.create_namespaced_event(namespace, event, _request_timeout=self._timeout)
        except ApiException as error:
            if error.status == 409:
                return False
            self._fail(error, what)
        except Exception as error:
            self._fail(error, what)
        return True

    def get_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        """One object a group references, by kind; None when it does not exist."""
        resource = KINDS.get(kind)
        if resource is None:
            raise PermanentError(f"kind {kind!r} is not one a FailoverGroup references", cluster=self.name)
        return self.find(resource, namespace, name)

    # --- watch ---------------------------------------------------------------------------------

    def watch(self, resource: KindInfo, resource_version: str, *, timeout_seconds: int) -> Iterator[Obj]:
        """Events (``{"type", "object"}``, objects as dicts, BOOKMARKs included) after
        ``resource_version``, until the server ends the watch after ``timeout_seconds`` or
        :meth:`stop_watch` is called. Raises :class:`ResourceGone` when the server answers 410.
        """
        what = f"watch {resource.plural} from resourceVersion {resource_version}"
        try:
            response: Any = self.custom.list_cluster_custom_object(
                resource.group,
                resource.versions[0],
                resource.plural,
                watch=True,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(self.connect_timeout, timeout_seconds + self.request_timeout),
            )
        except Exception as error:
            self._fail(error, what)
        with self._lock:
            self._response = response
        try:
            for line in _lines(response):
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    self._fail(
                        ApiException(
                            status=int(status.get("code") or 500),
                            reason=f"{status.get('reason')}: {status.get('message')}",
                        ),
                        what,
                    )
                yield event
        except OrchestratorError:
            raise
        except Exception as error:
            if self._stopped_watch(response):  # stopped on purpose: the cut connection is no failure
                return
            self._fail(error, what)
        finally:
            with self._lock:
                if self._response is response:
                    self._response = None
            response.close()
            response.release_conn()

    def _stopped_watch(self, response: Any) -> bool:
        with self._lock:
            return response in self._stopped

    def stop_watch(self) -> None:
        """End the current watch now (from another thread): its connection is shut down."""
        with self._lock:
            response, self._response = self._response, None
            if response is None:
                return
            self._stopped = [response]
        # Shutting the socket down unblocks the reader at once (closing it from here could deadlock
        # with the read in progress); the watching thread then closes the response itself.
        with contextlib.suppress(Exception):
            response.shutdown()


def _obj(value: object) -> Obj:
    if not isinstance(value, dict):
        raise PermanentError(f"unexpected answer from the API server: {type(value).__name__}")
    return value


def _lines(response: Any) -> Iterator[str]:
    """Non-empty lines of a chunked watch response, as they arrive."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if buffer.strip():
        yield buffer.decode("utf-8", errors="replace")


def connect(
    kubeconfig: str | Path | None, clusters: Sequence[str] = (), **options: float
) -> dict[str, ClusterClient]:
    """A client per cluster: ``clusters`` if given, else every context of the kubeconfig."""
    contexts = kubeconfig_contexts(kubeconfig)
    names = list(clusters) or contexts
    if not names:
        raise PermanentError(f"kubeconfig {kubeconfig or '~/.kube/config'} has no contexts")
    unknown = [name for name in names if name not in contexts]
    if unknown:
        raise PermanentError(
            f"cluster {unknown[0]!r}: no such context in kubeconfig {kubeconfig or '~/.kube/config'} "
            f"({', '.join(contexts)}); name clusters by their contexts (--cluster, FAILOVER_CLUSTERS)"
        )
    clients: dict[str, ClusterClient] = {}
    try:
        for name in names:
            clients[name] = ClusterClient.from_kubeconfig(kubeconfig, name, **options)
    except BaseException:
        for opened in clients.values():
            opened.close()
        raise
    return clients
