"""REST semantics of resource requests: routing a URL to a kind, and get/list/watch/create/update/patch/
delete/deletecollection on objects and their ``/status`` and ``/scale`` subresources.

Returns :class:`Response` (a JSON body and code) or :class:`Stream` (watch events) for the HTTP layer to
write; faults are checked here, per verb and resource, before anything happens. Every write carries an
admission hook (:meth:`ResourceApi._admit`) built from the request: the caller's identity, the route,
dry run; the store calls it on the final object (see admission.py). Server-side apply
(``application/apply-patch+yaml``) is refused with 415, and strategic merge patch is refused with 415
for custom resources, exactly as a real server refuses it. This module must not touch sockets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from sandbox.kube import errors
from sandbox.kube.admission import Attributes, PolicyAdmission
from sandbox.kube.discovery import table
from sandbox.kube.faults import FaultKnobs
from sandbox.kube.identity import ANONYMOUS, RequestContext
from sandbox.kube.kinds import ResourceKind
from sandbox.kube.patch import JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, apply_patch
from sandbox.kube.rbac import Authorizer, Request
from sandbox.kube.selectors import parse_field_selector, parse_label_selector, selector_string
from sandbox.kube.store import Admit, Body, ObjectStore
from sandbox.kube.watch import WatchRequest, stream_events


@dataclass(frozen=True)
class Route:
    kind: ResourceKind
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class Response:
    code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    events: Iterator[dict[str, Any]]


@dataclass
class WatchSettings:
    """Server-wide watch behaviour: bookmark cadence and the timeout when a client gives none."""

    bookmark_interval: float = 1.0
    default_timeout: float = 1800.0


def _truthy(value: str | None) -> bool:
    return value in ("true", "1", "True")


class ResourceApi:
    """Handles one cluster's resource requests against its store and fault knobs."""

    def __init__(
        self,
        store: ObjectStore,
        faults: FaultKnobs,
        watch: WatchSettings,
        stopped: Callable[[], bool],
        admission: PolicyAdmission | None = None,
        *,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.store = store
        self.faults = faults
        self.watch = watch
        self.stopped = stopped
        self.admission = admission
        self.authorizer = authorizer

    # --- routing --------------------------------------------------------------------------------

    def route(self, path: str) -> Route | None:
        """Map ``/api/v1/...`` or ``/apis/<group>/<version>/...`` to a kind, or None if not a resource."""
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 3 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 4 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        registry = self.store.registry
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            scoped = registry.find(group, version, rest[2])
            if scoped is not None and scoped.namespaced:
                namespace, rest = rest[1], rest[2:]
        kind = registry.find(group, version, rest[0])
        if kind is None or len(rest) > 3 or (kind.namespaced and namespace is None and len(rest) > 1):
            raise errors.path_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not ((sub == "status" and kind.status) or (sub == "scale" and kind.scale)):
            raise errors.path_not_found()
        return Route(kind, version, namespace, name, sub)

    @staticmethod
    def verb(method: str, route: Route, query: dict[str, str]) -> str:
        if method == "GET":
            if route.name:
                return "get"
            return "watch" if _truthy(query.get("watch")) else "list"
        if method == "DELETE":
            return "delete" if route.name else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())

    def authorize(self, method: str, route: Route, query: dict[str, str], context: RequestContext) -> None:
        """RBAC: raise the 403 of a request ``context.user`` may not make (before anything happens)."""
        if self.authorizer is None:
            return
        request = Request(
            verb=self.verb(method, route, query),
            group=route.kind.group,
            resource=route.kind.plural,
            subresource=route.subresource,
            namespace=route.namespace,
            name=route.name,
        )
        self.authorizer.authorize(context.user, request)

    # --- dispatch -------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        route: Route,
        query: dict[str, str],
        headers: dict[str, str],
        raw: bytes,
        *,
        context: RequestContext | None = None,
    ) -> Response | Stream:
        """Serve one resource request for ``context.user`` (anonymous if no context is given)."""
        context = context if context is not None else RequestContext(ANONYMOUS)
        verb = self.verb(method, route, query)
        kind = route.kind
        self.faults.check(
            verb,
            kind.plural,
            kind.group,
            subresource=route.subresource,
            namespace=route.namespace,
            name=route.name,
        )
        dry_run = self._dry_run(query)
        content_type = headers.get("content-type", "application/json").split(";")[0].strip()
        as_table = "as=Table" in headers.get("accept", "")
        admit = self._admit(route, context, dry_run)
        if verb == "get":
            # A read-only view: answers are only serialised, so no copy of the object is made.
            obj = self.store.get(kind, route.namespace, route.name or "", version=route.version, shared=True)
            if route.subresource == "scale":
                return Response(200, self._to_scale(obj))
            return Response(200, table(kind, [obj], obj["metadata"]["resourceVersion"]) if as_table else obj)
        if verb == "list":
            return self._list(route, query, as_table)
        if verb == "watch":
            return self._watch(route, query, as_table)
        if verb == "create":
            if route.name:
                raise errors.method_not_allowed()
            body = self._decode(raw, content_type)
            return Response(
                201,
                self.store.create(
                    kind, body, namespace=route.namespace, dry_run=dry_run, version=route.version, admit=admit
                ),
            )
        if verb == "update":
            return Response(200, self._update(route, self._decode(raw, content_type), dry_run, admit))
        if verb == "patch":
            return Response(200, self._patch(route, content_type, raw, dry_run, admit))
        if verb == "delete":
            # DeleteOptions in the body may ask for a dry run too: admission must see the final answer
            return self._delete(route, query, raw, dry_run, lambda dry: self._admit(route, context, dry))
        if verb == "deletecollection":
            items = self._list(route, query, False).body["items"]
            for item in items:
                self.store.delete(
                    kind,
                    item["metadata"].get("namespace"),
                    item["metadata"]["name"],
                    dry_run=dry_run,
                    admit=admit,
                )
            return Response(
                200,
                {
                    "kind": f"{kind.kind}List",
                    "apiVersion": kind.api_version(route.version),
                    "metadata": {"resourceVersion": str(self.store.resource_version)},
                    "items": items,
                },
            )
        raise errors.method_not_allowed()

    def _admit(self, route: Route, context: RequestContext, dry_run: bool) -> Admit | None:
        """The admission hook the store calls for this request's writes (None: no admission)."""
        admission = self.admission
        if admission is None:
            return None

        def admit(operation: str, new: Body | None, old: Body | None) -> None:
            meta = (new if new is not None else old or {}).get("metadata") or {}
            gvk = None
            if route.subresource == "scale":  # a /scale write is admitted as the Scale it is
                new = self._to_scale(new) if new is not None else None
                old = self._to_scale(old) if old is not None else None
                gvk = ("autoscaling", "v1", "Scale")
            attrs = Attributes(
                operation=operation,
                kind=route.kind,
                version=route.version,
                subresource=route.subresource,
                namespace=meta.get("namespace") or "",
                name=meta.get("name") or "",
                user=context.user,
                dry_run=dry_run,
                obj=new,
                old=old,
                gvk=gvk,
            )
            admission.admit(attrs, context)

        return admit

    @staticmethod
    def _dry_run(query: dict[str, str]) -> bool:
        value = query.get("dryRun")
        if value not in (None, "", "All"):
            raise errors.bad_request(f'Invalid dry run value: "{value}"; supported values: "All"')
        return value == "All"

    @staticmethod
    def _decode(raw: bytes, content_type: str) -> Any:
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw.decode() or "null")
            return json.loads(raw.decode() or "null")
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc

    # --- verbs ----------------------------------------------------------------------------------

    def _list(self, route: Route, query: dict[str, str], as_table: bool) -> Response:
        kind = route.kind
        items, rv = self.store.list(
            kind,
            route.namespace,
            label_selector=query.get("labelSelector"),
            field_selector=query.get("fieldSelector"),
            version=route.version,
            shared=True,
        )
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        token = query.get("continue")
        if token:
            try:
                after = json.loads(base64.urlsafe_b64decode(token.encode()))
            except ValueError as exc:
                raise errors.bad_request("continue key is not valid") from exc
            items = [i for i in items if [i["metadata"].get("namespace", ""), i["metadata"]["name"]] > after]
        limit = int(query.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            key = json.dumps([last.get("namespace", ""), last["name"]]).encode()
            meta["continue"] = base64.urlsafe_b64encode(key).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if as_table:
            return Response(200, table(kind, items, str(rv)))
        return Response(
            200,
            {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version(route.version),
                "metadata": meta,
                "items": items,
            },
        )

    def _watch(self, route: Route, query: dict[str, str], as_table: bool) -> Stream:
        kind = route.kind
        timeout = float(query.get("timeoutSeconds") or self.watch.default_timeout)
        req = WatchRequest(
            kind=kind,
            version=route.version,
            namespace=route.namespace,
            labels=parse_label_selector(query.get("labelSelector")),
            fields=parse_field_selector(query.get("fieldSelector"), kind.field_selectors),
            resource_version=query.get("resourceVersion"),
            timeout=timeout,
            bookmarks=_truthy(query.get("allowWatchBookmarks")),
            bookmark_interval=self.watch.bookmark_interval,
        )
        # A malformed starting point is a plain 400 before headers go out; a too old one is a 410
        # ERROR event inside the stream, as the real watch cache sends it.
        if req.resource_version and not req.resource_version.isdigit():
            raise errors.bad_request(f"invalid resource version {req.resource_version!r}")
        events = stream_events(self.store, req, self.stopped)
        if as_table:  # `kubectl get -w`: each object arrives as a one-row Table, as from a real server
            events = self._as_tables(kind, events)
        return Stream(events)

    @staticmethod
    def _as_tables(kind: ResourceKind, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for event in events:
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                obj = event["object"]
                yield {
                    "type": event["type"],
                    "object": table(kind, [obj], obj["metadata"]["resourceVersion"]),
                }
            else:
                yield event

    def _update(self, route: Route, body: Any, dry_run: bool, admit: Admit | None) -> Body:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body is not an object")
        if route.subresource == "scale":
            return self._write_scale(route, lambda _scale: body, dry_run, admit)
        return self.store.update(
            route.kind,
            route.namespace,
            route.name or "",
            body,
            subresource=route.subresource,
            dry_run=dry_run,
            version=route.version,
            admit=admit,
        )

    def _patch(self, route: Route, content_type: str, raw: bytes, dry_run: bool, admit: Admit | None) -> Body:
        kind = route.kind
        # Server-side apply is not implemented: refused like a server without it (kubectl then says
        # "Server-side apply not available on the server").
        accepted = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH] if kind.builtin else [JSON_PATCH, MERGE_PATCH]
        if content_type not in accepted:
            raise errors.unsupported_media_type(content_type, accepted)
        patch = self._decode(raw, "json")
        if route.subresource == "scale":
            return self._write_scale(
                route, lambda scale: apply_patch(content_type, scale, patch), dry_run, admit
            )
        return self.store.update(
            kind,
            route.namespace,
            route.name or "",
            lambda current: apply_patch(content_type, current, patch),
            subresource=route.subresource,
            dry_run=dry_run,
            version=route.version,
            admit=admit,
        )

    def _delete(
        self,
        route: Route,
        query: dict[str, str],
        raw: bytes,
        dry_run: bool,
        admit_for: Callable[[bool], Admit | None],
    ) -> Response:
        kind = route.kind
        options = self._decode(raw, "json") if raw.strip() else {}
        options = options if isinstance(options, dict) else {}
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        orphan = policy == "Orphan" or options.get("orphanDependents") is True
        dry_run = dry_run or options.get("dryRun") == ["All"]
        precondition = (options.get("preconditions") or {}).get("resourceVersion")
        obj = self.store.delete(
            kind,
            route.namespace,
            route.name or "",
            orphan=orphan,
            dry_run=dry_run,
            precondition_rv=precondition,
            version=route.version,
            admit=admit_for(dry_run),
        )
        if obj["metadata"].get("deletionTimestamp") or not kind.builtin or kind.key == "pods":
            return Response(200, obj)
        details = {"name": route.name, "kind": kind.plural, "uid": obj["metadata"]["uid"]}
        if kind.group:
            details["group"] = kind.group
        return Response(
            200,
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details},
        )

    # --- /scale ---------------------------------------------------------------------------------

    @staticmethod
    def _to_scale(obj: Body) -> Body:
        meta = obj["metadata"]
        status: dict[str, Any] = {"replicas": int((obj.get("status") or {}).get("replicas", 0))}
        selector = selector_string((obj.get("spec") or {}).get("selector"))
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 0))},
            "status": status,
        }

    def _write_scale(
        self, route: Route, change: Callable[[Body], Any], dry_run: bool, admit: Admit | None
    ) -> Body:
        """Apply ``change`` to the Scale view and write ``spec.replicas`` back (generation bumps)."""

        def update(current: Body) -> Body:
            scale = change(self._to_scale(current))
            if not isinstance(scale, dict) or scale.get("kind", "Scale") != "Scale":
                raise errors.bad_request("the body of a scale request must be an autoscaling/v1 Scale")
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid(
                    "Scale",
                    "autoscaling",
                    route.name or "",
                    "spec.replicas",
                    f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    cause="FieldValueInvalid",
                )
            current["spec"]["replicas"] = replicas
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv:
                current["metadata"]["resourceVersion"] = rv
            return current

        obj = self.store.update(
            route.kind,
            route.namespace,
            route.name or "",
            update,
            dry_run=dry_run,
            version=route.version,
            admit=admit,
        )
        return self._to_scale(obj)
