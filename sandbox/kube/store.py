"""The object store of one sandbox cluster: the etcd plus the generic registry of a real API server.

Holds every object, hands out ``metadata.resourceVersion`` from one monotonically increasing counter,
keeps a bounded history of watch events, and applies the rules every write goes through on a real
server: uid/creationTimestamp/generation bookkeeping, optimistic concurrency (409 on a stale
resourceVersion), status-subresource separation, no-op writes that change nothing, finalizers,
garbage collection of owned objects, namespace and CRD lifecycles.

Writes take an optional ``admit`` hook, called inside the lock with ``(operation, new, old)`` on the
final object (defaults applied, validation and CRD rules passed) right before it would be stored: the
API layer passes one for every request that arrives over HTTP, so admission policies see exactly what
would be written; writes made directly (tests, controllers) pass none and are not admitted.

It is also the direct-access API for tests (``cluster.store.get("Deployment", "shop", "web")``,
``put``, ``list``). It must not speak HTTP, parse patches or run controllers.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.kube import crd_defaults, crd_rules, errors
from sandbox.kube.errors import ApiError
from sandbox.kube.kinds import KindRegistry, ResourceKind, kind_from_crd
from sandbox.kube.selectors import indexable_requirements, parse_field_selector, parse_label_selector
from sandbox.kube.validation import apply_defaults, initial_status, validate, validate_name

KindRef = str | ResourceKind
Body = dict[str, Any]
Bodies = list[Body]
Events = list["StoredEvent"]  # aliases: inside ObjectStore, ``list`` names the method
# The admission hook of one request: (operation, new object, old object); raises ApiError to refuse.
Admit = Callable[[str, Body | None, Body | None], None]
# A change listener: (event type, kind key, namespace, name, object), called inside the store's lock.
Listener = Callable[[str, str, str, str, Body], None]
ObjKey = tuple[str, str]  # (namespace, name)
_CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"
_SERVER_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")


def utcnow() -> str:
    """A timestamp in the RFC 3339 form the API uses (second precision, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StoredEvent:
    """One change, as kept in the watch history: ``old`` is the object before a MODIFIED."""

    rv: int
    type: str
    key: str
    namespace: str
    obj: Body
    old: Body | None


def clone(value: Any) -> Any:
    """A deep copy of a JSON-like value (dicts, lists, scalars): several times faster than deepcopy."""
    if type(value) is dict:
        return {k: clone(v) for k, v in value.items()}
    if type(value) is list:
        return [clone(v) for v in value]
    return value


def _label_pairs(obj: Body) -> list[tuple[str, str]]:
    labels = (obj.get("metadata") or {}).get("labels")
    if not isinstance(labels, dict):
        return []
    return [(k, v) for k, v in labels.items() if isinstance(v, str)]


class _KindIndex:
    """The objects of one kind, indexed by namespace and by label (key, value) pair.

    Stored objects are never changed in place (every write stores a new dict), so the indexes, the
    watch history and the listeners may share them; only copies leave the store.
    """

    def __init__(self) -> None:
        self.objects: dict[ObjKey, Body] = {}
        self.by_namespace: dict[str, dict[str, Body]] = {}
        self.by_label: dict[tuple[str, str], set[ObjKey]] = {}

    def put(self, key: ObjKey, obj: Body) -> Body | None:
        old = self.objects.get(key)
        if old is not None:
            self._unlabel(key, old)
        self.objects[key] = obj
        self.by_namespace.setdefault(key[0], {})[key[1]] = obj
        for pair in _label_pairs(obj):
            self.by_label.setdefault(pair, set()).add(key)
        return old

    def pop(self, key: ObjKey) -> Body:
        obj = self.objects.pop(key)
        names = self.by_namespace[key[0]]
        del names[key[1]]
        if not names:
            del self.by_namespace[key[0]]
        self._unlabel(key, obj)
        return obj

    def _unlabel(self, key: ObjKey, obj: Body) -> None:
        for pair in _label_pairs(obj):
            keys = self.by_label.get(pair)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_label[pair]

    def candidates(self, namespace: str | None, label_selector: str | None) -> list[tuple[ObjKey, Body]]:
        """Objects that may match, sorted by (namespace, name): narrowed by the namespace and by the
        selector's equality/``in`` requirements; the caller still applies the full selectors."""
        keys: set[ObjKey] | None = None
        for label, values in indexable_requirements(label_selector):
            found: set[ObjKey] = set()
            for value in values:
                found |= self.by_label.get((label, value), set())
            keys = found if keys is None else keys & found
        if namespace is not None:
            names = self.by_namespace.get(namespace, {})
            if keys is None:
                return [((namespace, n), names[n]) for n in sorted(names)]
            keys = {k for k in keys if k[0] == namespace}
        if keys is None:
            return sorted(self.objects.items())
        return [(k, self.objects[k]) for k in sorted(keys)]


def _spec_part(obj: Body) -> Body:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class ObjectStore:
    """Thread-safe object storage with watch history; every public method accepts a kind name."""

    def __init__(self, registry: KindRegistry, history_limit: int = 1000) -> None:
        self.registry = registry
        self._cond = threading.Condition(threading.RLock())
        self._objects: dict[str, _KindIndex] = {}
        self._owned: dict[str, set[tuple[str, str, str]]] = {}  # owner uid -> (kind key, ns, name)
        self._listeners: list[Listener] = []
        self._kind_rv: dict[str, int] = {}  # kind key -> resourceVersion of its latest change
        self._rv = 0
        self._history: deque[StoredEvent] = deque()
        self._history_limit = history_limit
        self._evicted_rv = 0

    # --- bookkeeping ----------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        with self._cond:
            return self._rv

    @property
    def history_limit(self) -> int:
        return self._history_limit

    @history_limit.setter
    def history_limit(self, value: int) -> None:
        with self._cond:
            self._history_limit = max(0, value)
            self._trim()

    def compact(self) -> None:
        """Forget all watch history, like an etcd compaction: older watches then get 410 Gone."""
        with self._cond:
            self._history.clear()
            self._evicted_rv = self._rv

    def _trim(self) -> None:
        while len(self._history) > self._history_limit:
            self._evicted_rv = self._history.popleft().rv

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, type_: str, kind: ResourceKind, obj: Body, old: Body | None = None) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        # ``obj`` is never changed once stored, so the history shares it instead of copying it.
        self._history.append(StoredEvent(self._rv, type_, kind.key, namespace, obj, old))
        self._kind_rv[kind.key] = self._rv
        self._trim()
        self._cond.notify_all()
        for listener in self._listeners:
            listener(type_, kind.key, namespace, meta["name"], obj)

    def kinds_version(self, *keys: str) -> tuple[int, ...]:
        """When the objects of these kinds (by key) last changed: a cache of what was computed from
        them is current while this stays the same."""
        with self._cond:
            return tuple(self._kind_rv.get(key, 0) for key in keys)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(type, kind key, namespace, name, object)`` on every change, inside the store's
        lock (it must be quick, must not change the object and must not call the store); returns the
        function that unsubscribes."""
        with self._cond:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def keys(self, kind: KindRef) -> list[tuple[str, str]]:
        """The (namespace, name) of every object of ``kind`` (none when the kind is not served)."""
        try:
            k = self.registry.resolve(kind)
        except KeyError:
            return []
        with self._cond:
            index = self._objects.get(k.key)
            return list(index.objects) if index is not None else []

    def _store(self, k: ResourceKind, key: ObjKey, obj: Body) -> None:
        old = self._bucket(k).put(key, obj)
        if old is not None:
            self._unown(k, key, old)
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("uid"):
                self._owned.setdefault(ref["uid"], set()).add((k.key, *key))

    def _unstore(self, k: ResourceKind, key: ObjKey) -> Body:
        obj = self._bucket(k).pop(key)
        self._unown(k, key, obj)
        return obj

    def _unown(self, k: ResourceKind, key: ObjKey, obj: Body) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            owned = self._owned.get(ref.get("uid") or "")
            if owned is not None:
                owned.discard((k.key, *key))
                if not owned:
                    del self._owned[ref["uid"]]

    def wake(self) -> None:
        """Wake every watcher waiting for events (used when a server stops)."""
        with self._cond:
            self._cond.notify_all()

    def _bucket(self, kind: ResourceKind) -> _KindIndex:
        index = self._objects.get(kind.key)
        if index is None:
            index = self._objects[kind.key] = _KindIndex()
        return index

    def _exists(self, key: str, ns: str, name: str) -> bool:
        index = self._objects.get(key)
        return index is not None and (ns, name) in index.objects

    def kind(self, ref: KindRef) -> ResourceKind:
        try:
            return self.registry.resolve(ref)
        except KeyError as exc:
            raise errors.path_not_found() from exc

    @staticmethod
    def output(kind: ResourceKind, obj: Body, version: str | None = None) -> Body:
        """A copy of a stored object as served at ``version`` (only apiVersion differs)."""
        out: Body = clone(obj)
        out["apiVersion"] = kind.api_version(version)
        out["kind"] = kind.kind
        return out

    @staticmethod
    def view(kind: ResourceKind, obj: Body, version: str | None = None) -> Body:
        """A read-only view of a stored object as served at ``version``: a shallow copy, for answers
        that are only serialised (watch events). Never change it: it shares the stored object's parts."""
        return {**obj, "apiVersion": kind.api_version(version), "kind": kind.kind}

    def _ns(self, kind: ResourceKind, namespace: str | None) -> str:
        return (namespace or "default") if kind.namespaced else ""

    # --- reads ----------------------------------------------------------------------------------

    def get(
        self,
        kind: KindRef,
        namespace: str | None,
        name: str,
        *,
        version: str | None = None,
        shared: bool = False,
    ) -> Body:
        """One object (a copy; with ``shared``, a read-only :meth:`view`); 404 ApiError when missing."""
        k = self.kind(kind)
        with self._cond:
            obj = self._bucket(k).objects.get((self._ns(k, namespace), name))
            if obj is None:
                raise errors.not_found(k.plural, k.group, name)
            return self.view(k, obj, version) if shared else self.output(k, obj, version)

    def find(self, kind: KindRef, namespace: str | None, name: str) -> Body | None:
        """Like :meth:`get` but ``None`` when missing."""
        try:
            return self.get(kind, namespace, name)
        except ApiError:
            return None

    def list(
        self,
        kind: KindRef,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        version: str | None = None,
        shared: bool = False,
    ) -> tuple[Bodies, int]:
        """Matching objects sorted by namespace/name (copies; with ``shared``, read-only views that are
        only to be serialised, as the API's answers are), and the resourceVersion of the list."""
        k = self.kind(kind)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, k.field_selectors)
        scope = namespace if namespace and k.namespaced else None
        with self._cond:
            out = self.view if shared else self.output
            items = [
                out(k, obj, version)
                for _key, obj in self._bucket(k).candidates(scope, label_selector)
                if labels(obj) and fields(obj)
            ]
            return items, self._rv

    # --- writes ---------------------------------------------------------------------------------

    def create(
        self,
        kind: KindRef,
        body: Body,
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        version: str | None = None,
        keep_status: bool = False,
        admit: Admit | None = None,
    ) -> Body:
        """POST semantics: defaults, validation, 409 AlreadyExists, status dropped unless ``keep_status``."""
        k = self.kind(kind)
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request(
                f'{k.kind} in version "{k.storage_version}" cannot be handled: not an object'
            )
        obj = clone(body)
        self._check_type(k, obj, version)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name")
        if not name:
            raise errors.invalid(
                k.kind, k.group, "", "metadata.name", "Required value: name or generateName is required"
            )
        validate_name(k, name)
        with self._cond:
            if k.namespaced:
                body_ns = meta.get("namespace")
                if namespace and body_ns and body_ns != namespace:
                    raise errors.bad_request(
                        "the namespace of the provided object does not match the "
                        "namespace sent on the request"
                    )
                ns = namespace or body_ns or "default"
                if not self._exists("namespaces", "", ns):
                    raise errors.not_found("namespaces", "", ns)
                meta["namespace"] = ns
            else:
                ns = ""
                meta.pop("namespace", None)
            if (ns, name) in self._bucket(k).objects:
                raise errors.already_exists(k.plural, k.group, name)
            for field in (*_SERVER_META, "resourceVersion"):
                meta.pop(field, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = utcnow()
            if k.generation:
                meta["generation"] = 1
            if k.status and (not keep_status or obj.get("status") is None):
                obj.pop("status", None)
                status = initial_status(k, obj)
                if status is not None:
                    obj["status"] = status
            self._default(k, obj, version)
            self._check(k, obj, None, version, admit)
            if k.key == _CRD_KEY:
                self._establish_crd(obj)
            if dry_run:
                return self.output(k, obj, version)
            meta["resourceVersion"] = self._next_rv()
            obj["apiVersion"], obj["kind"] = k.api_version(), k.kind
            self._store(k, (ns, name), obj)
            self._record("ADDED", k, obj)
            if k.key == _CRD_KEY:
                self.registry.add(kind_from_crd(obj))
            return self.output(k, obj, version)

    def update(
        self,
        kind: KindRef,
        namespace: str | None,
        name: str,
        body: Body | Callable[[Body], Body],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        version: str | None = None,
        keep_status: bool = False,
        admit: Admit | None = None,
    ) -> Body:
        """PUT semantics; ``body`` may be a function of the current object (how patches are applied).

        A non-empty ``metadata.resourceVersion`` in the new body must equal the stored one (else 409).
        For kinds with a status subresource the main resource ignores status and ``/status`` ignores
        everything but status. A write that changes nothing is a no-op: no new resourceVersion, no event.
        """
        k = self.kind(kind)
        with self._cond:
            ns = self._ns(k, namespace)
            current = self._bucket(k).objects.get((ns, name))
            if current is None:
                raise errors.not_found(k.plural, k.group, name)
            new = body(self.output(k, current, version)) if callable(body) else clone(body)
            if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
                raise errors.bad_request("the request body is not an object")
            self._check_type(k, new, version)
            meta = new.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise errors.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            if k.namespaced and meta.get("namespace") not in (None, "", ns):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            rv = meta.get("resourceVersion")
            if rv not in (None, "") and str(rv) != current["metadata"]["resourceVersion"]:
                raise errors.conflict(k.plural, k.group, name)
            if subresource == "status":
                merged = clone(current)
                merged["status"] = new.get("status")
                new = merged
            elif k.status and not keep_status:
                new["status"] = clone(current.get("status"))
            if new.get("status") is None:
                new.pop("status", None)
            meta = new.setdefault("metadata", {})
            meta["name"] = name
            if k.namespaced:
                meta["namespace"] = ns
            for field in _SERVER_META:
                meta.pop(field, None)
                if field in current["metadata"]:
                    meta[field] = current["metadata"][field]
            self._default(k, new, version)
            if k.generation and _spec_part(new) != _spec_part(current):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            new["apiVersion"], new["kind"] = k.api_version(), k.kind
            self._check(k, new, current, version, admit)  # admitted before the no-op check, as upstream
            if new == current:
                return self.output(k, current, version)
            if k.key == _CRD_KEY:
                self._establish_crd(new)
            if dry_run:
                return self.output(k, new, version)
            meta["resourceVersion"] = self._next_rv()
            self._store(k, (ns, name), new)
            self._record("MODIFIED", k, new, current)
            if k.key == _CRD_KEY:
                self._crd_updated(new)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                return self._remove(k, ns, name, orphan=False, version=version)
            return self.output(k, new, version)

    def delete(
        self,
        kind: KindRef,
        namespace: str | None,
        name: str,
        *,
        orphan: bool = False,
        dry_run: bool = False,
        precondition_rv: str | None = None,
        version: str | None = None,
        admit: Admit | None = None,
    ) -> Body:
        """Delete (or, with finalizers, mark for deletion); owned objects follow unless ``orphan``."""
        k = self.kind(kind)
        with self._cond:
            ns = self._ns(k, namespace)
            current = self._bucket(k).objects.get((ns, name))
            if current is None:
                raise errors.not_found(k.plural, k.group, name)
            if precondition_rv and precondition_rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(k.plural, k.group, name)
            if admit is not None:
                admit("DELETE", None, self.output(k, current, version))
            if dry_run:
                return self.output(k, current, version)
            if current["metadata"].get("finalizers"):
                if current["metadata"].get("deletionTimestamp"):
                    return self.output(k, current, version)
                marked = clone(current)
                marked["metadata"]["deletionTimestamp"] = utcnow()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                marked["metadata"]["resourceVersion"] = self._next_rv()
                self._store(k, (ns, name), marked)
                self._record("MODIFIED", k, marked, current)
                return self.output(k, marked, version)
            return self._remove(k, ns, name, orphan=orphan, version=version)

    def _remove(self, k: ResourceKind, ns: str, name: str, *, orphan: bool, version: str | None) -> Body:
        obj = self._unstore(k, (ns, name))
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self._next_rv()}}
        self._record("DELETED", k, obj)
        uid = obj["metadata"]["uid"]
        if k.key == "namespaces":
            self._delete_keys(
                (key, name, n)
                for key, index in self._objects.items()
                for n in index.by_namespace.get(name, {})
            )
        elif k.key == _CRD_KEY:
            served = self.registry.by_key(f"{obj['spec']['names']['plural']}.{obj['spec']['group']}")
            if served is not None:
                self._delete_keys((served.key, *key) for key in self.keys(served))
                self.registry.remove(served.key)
        if not orphan:
            # The garbage collector deletes dependents in the background once the owner is gone.
            self._delete_keys(self._owned.get(uid, ()))
        return self.output(k, obj, version)

    def _delete_keys(self, keys: Any) -> None:
        """Delete these (kind key, namespace, name) objects, each only if still there (cascades run)."""
        for key, ns, name in sorted(keys):
            kind = self.registry.by_key(key)
            if kind is not None and self._exists(key, ns, name):
                self.delete(kind, ns or None, name)

    def _check_type(self, k: ResourceKind, obj: Body, version: str | None) -> None:
        """apiVersion/kind default from the URL; a body of another kind is a 400 as on a real server."""
        expected = k.api_version(version)
        api_version, kind_name = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version.rpartition("/")[0] != k.group:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({expected})"
            )
        if kind_name and kind_name != k.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind_name}) does not match the expected kind ({k.kind})"
            )

    @staticmethod
    def _establish_crd(obj: Body) -> None:
        """What the apiextensions controllers report within milliseconds of a valid CRD appearing."""
        spec = obj["spec"]
        now = utcnow()
        obj["status"] = {
            "acceptedNames": clone(spec["names"]),
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now,
                },
            ],
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
        }

    def _schema(self, k: ResourceKind, version: str | None) -> Body | None:
        """The ``openAPIV3Schema`` of a custom kind at ``version`` (its storage version if None)."""
        if k.builtin:
            return None
        crds = self._objects.get(_CRD_KEY)
        crd = crds.objects.get(("", k.key)) if crds is not None else None
        return crd_rules.version_schema(crd, version or k.storage_version) if crd is not None else None

    def _default(self, k: ResourceKind, obj: Body, version: str | None) -> None:
        """The defaults of a write: the built-in kinds' defaulting, a custom kind's schema defaults."""
        apply_defaults(k, obj)
        crd_defaults.apply(self._schema(k, version), obj)

    def _crd_updated(self, crd: Body) -> None:
        """A CRD changed: its kind is served as it now says, and its stored objects read back with its
        (new) schema defaults, as upstream defaults on read: nothing is written, so no new
        resourceVersion and no watch event."""
        self.registry.add(kind_from_crd(crd))
        k = self.registry.by_key(crd["metadata"]["name"])
        bucket = self._objects.get(crd["metadata"]["name"])
        if k is None or bucket is None:
            return
        schema = self._schema(k, None)
        for key, stored in list(bucket.objects.items()):
            defaulted = clone(stored)
            crd_defaults.apply(schema, defaulted)
            if defaulted != stored:
                self._store(k, key, defaulted)

    def _check(
        self, k: ResourceKind, obj: Body, old: Body | None, version: str | None, admit: Admit | None
    ) -> None:
        """The last checks of a create or update: validation, the CRD's rules, the request's admission.

        Same order as a real server: validation (with the CRD's ``x-kubernetes-validations``) before
        validating admission, all on the final object.
        """
        validate(k, obj, old)
        schema = self._schema(k, version)
        if schema is not None:
            crd_rules.check(k, schema, obj, old)
        if admit is not None:
            out_old = self.output(k, old, version) if old is not None else None
            admit("UPDATE" if old is not None else "CREATE", self.output(k, obj, version), out_old)

    # --- helpers for tests and controllers ------------------------------------------------------

    def put(self, obj: Body) -> Body:
        """Create or replace ``obj`` as given, status included, creating its namespace if needed.

        For test setup and the sample loader: it skips the status rules of the API but still assigns
        resourceVersion/generation and emits watch events, so watchers see the change.
        """
        k = self.registry.for_api_version(obj.get("apiVersion", ""), obj.get("kind", ""))
        if k is None:
            raise KeyError(f"no served kind for {obj.get('apiVersion')} {obj.get('kind')}")
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        with self._cond:
            if k.namespaced and not self._exists("namespaces", "", ns):
                self.create("namespaces", {"metadata": {"name": ns}})
            if self.find(k, ns, meta.get("name", "")) is None:
                return self.create(k, obj, namespace=ns if k.namespaced else None, keep_status=True)
            body = clone(obj)
            body["metadata"].pop("resourceVersion", None)
            return self.update(k, ns, meta["name"], body, keep_status=True)

    def events_after(self, cursor: int, timeout: float) -> tuple[Events, int]:
        """Events newer than ``cursor`` (waiting up to ``timeout`` for one); 410 if history lost them."""
        with self._cond:
            if self._rv <= cursor:
                self._cond.wait(timeout)
            if cursor < self._evicted_rv:
                raise errors.gone(cursor, self._evicted_rv + 1)
            events: Events = []
            for event in reversed(self._history):  # newest first: stop at the first one seen already
                if event.rv <= cursor:
                    break
                events.append(event)
            events.reverse()
            return events, max(cursor, self._rv)

    def watch_start(self, resource_version: str | None) -> tuple[int, bool]:
        """Validate a watch's starting point: ``(cursor, send_initial_state)``; 410 if too old."""
        if resource_version in (None, "", "0"):
            with self._cond:
                return self._rv, True
        try:
            cursor = int(str(resource_version))
        except ValueError as exc:
            raise errors.bad_request(f"invalid resource version {resource_version!r}") from exc
        with self._cond:
            if cursor < self._evicted_rv:
                raise errors.gone(cursor, self._evicted_rv + 1)
            return cursor, False

    def snapshot(self, kind: ResourceKind, namespace: str | None) -> tuple[Bodies, int]:
        """All objects of a kind and the resourceVersion they are consistent with (for watch from 0)."""
        scope = namespace if namespace and kind.namespaced else None
        with self._cond:
            # Shared, not copied: stored objects are never changed in place (see _KindIndex).
            objs = [o for _key, o in self._bucket(kind).candidates(scope, None)]
            return objs, self._rv
