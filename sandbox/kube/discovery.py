"""Discovery documents (/api, /api/v1, /apis, /apis/<group>[/<version>], /version) and Table output.

kubectl and the dynamic client find resources through these documents, and ``kubectl scale`` finds the
Scale kind through the ``deployments/scale`` entry, so they list every served kind with its verbs,
short names and subresources. Only the legacy (unaggregated) discovery format is served: kubectl falls
back to it when the server answers the aggregated request with a plain APIGroupList, as older servers
do. This module builds documents from the kind registry; it must not read objects or speak HTTP.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from sandbox.kube.kinds import ALL_VERBS, KindRegistry, ResourceKind

SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_doc(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: KindRegistry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(name, versions) for name, versions in registry.groups().items()],
    }


def api_group(registry: KindRegistry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _resource_entries(kind: ResourceKind) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": list(ALL_VERBS),
        "storageVersionHash": hashlib.sha256(kind.key.encode()).hexdigest()[:11],
    }
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    entries = [entry]
    if kind.status:
        entries.append(
            {
                "name": f"{kind.plural}/status",
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    if kind.scale:
        entries.append(
            {
                "name": f"{kind.plural}/scale",
                "singularName": "",
                "namespaced": kind.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }
        )
    return entries


def api_resource_list(registry: KindRegistry, group: str, version: str) -> dict[str, Any] | None:
    kinds = [k for k in registry.all() if k.group == group and version in k.versions]
    if not kinds:
        return None
    group_version = f"{group}/{version}" if group else version
    resources = [e for k in sorted(kinds, key=lambda k: k.plural) for e in _resource_entries(k)]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


# --- Table (server-side printing, what `kubectl get` asks for) -----------------------------------


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - created).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _json_path(obj: dict[str, Any], path: str) -> Any:
    """The tiny JSONPath subset printer columns use: ``.a.b`` and ``.conditions[?(@.type=="X")].status``."""
    current: Any = obj
    for part in re.split(r"\.(?![^\[]*\])", path.strip(".")):  # dots inside [...] filters do not split
        if "[?(@." in part:
            field, rest = part.split("[?(@.", 1)
            key, _, value = rest.rstrip(")]").partition("==")
            items = (current or {}).get(field) if isinstance(current, dict) else None
            current = next((i for i in items or [] if str(i.get(key)) == value.strip('"')), None)
        elif isinstance(current, dict):
            current = current.get(part)
        else:
            return None
    return current


def _builtin_columns(kind: ResourceKind) -> list[tuple[str, str]]:
    if kind.key in ("deployments.apps", "statefulsets.apps"):
        return [("Ready", "ready"), ("Replicas", ".spec.replicas")]
    if kind.key == "cronjobs.batch":
        return [("Schedule", ".spec.schedule"), ("Suspend", ".spec.suspend")]
    if kind.key == "namespaces":
        return [("Status", ".status.phase")]
    if kind.key == "pods":
        return [("Status", ".status.phase")]
    return []


def _cell(obj: dict[str, Any], path: str, *, custom: bool) -> Any:
    """One cell: a built-in column prints a boolean as Go's printers do (``False``); a CRD's printer
    column serves the JSON value, which kubectl prints as ``false``."""
    if path == "ready":
        status = obj.get("status") or {}
        return f"{status.get('readyReplicas', 0)}/{(obj.get('spec') or {}).get('replicas', 0)}"
    value = _json_path(obj, path)
    if isinstance(value, bool):
        return ("true" if value else "false") if custom else str(value)
    return "<none>" if value is None else value


def table(kind: ResourceKind, objects: list[dict[str, Any]], list_rv: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: Name, kind-specific columns (or the CRD's printer columns), Age."""
    if kind.printer_columns:
        extra = [(c["name"], c["jsonPath"]) for c in kind.printer_columns if c["name"] != "Age"]
    else:
        extra = _builtin_columns(kind)
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    definitions += [
        {"name": n, "type": "string", "format": "", "description": n, "priority": 0} for n, _ in extra
    ]
    definitions.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
    rows = []
    for obj in objects:
        meta = obj["metadata"]
        custom = bool(kind.printer_columns)
        cells = [
            meta["name"],
            *(_cell(obj, path, custom=custom) for _, path in extra),
            _age(meta.get("creationTimestamp")),
        ]
        rows.append(
            {
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": list_rv},
        "columnDefinitions": definitions,
        "rows": rows,
    }


# --- OpenAPI v3 (only what kubectl needs to know that the server validates fields itself) --------


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_root(registry: KindRegistry) -> dict[str, Any]:
    """The /openapi/v3 index: one document per served group-version."""
    gvs = {(k.group, v) for k in registry.all() for v in k.versions}
    paths = {}
    for group, version in sorted(gvs):
        path = _gv_path(group, version)
        digest = hashlib.sha256(repr(sorted(k.key for k in registry.all())).encode()).hexdigest()[:16]
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_group_version(registry: KindRegistry, group: str, version: str) -> dict[str, Any] | None:
    """A minimal OpenAPI 3 document for one group-version.

    It declares the PATCH operation of every kind with its ``fieldValidation`` query parameter, which
    is how kubectl (``--validate=strict``, its default) learns that the server validates fields and so
    skips client-side schema validation. No schemas are published (``kubectl explain`` finds nothing);
    kubectl then computes strategic merge patches from its built-in Go types, as it does without
    OpenAPI.
    """
    kinds = [k for k in registry.all() if k.group == group and version in k.versions]
    if not kinds:
        return None
    paths: dict[str, Any] = {}
    for kind in kinds:
        prefix = f"/{_gv_path(group, version)}"
        scope = "/namespaces/{namespace}" if kind.namespaced else ""
        gvk = {"group": group, "version": version, "kind": kind.kind}
        paths[f"{prefix}{scope}/{kind.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{kind.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {
                        "name": "fieldValidation",
                        "in": "query",
                        "schema": {"type": "string", "uniqueItems": True},
                    },
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }
