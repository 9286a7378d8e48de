"""The two CustomResourceDefinitions (``Failover``, ``FailoverGroup``) generated from ``fsm.models``.

Pure: these functions only compute dicts from the pydantic models. They write no file and read no
environment; ``deploy/generate_crds.py`` renders them as YAML into ``deploy/crds/`` and a test checks
that the checked-in YAML still equals what this module generates.

The models' JSON schemas are turned into Kubernetes *structural* schemas
(apiextensions.k8s.io/v1): every ``$ref`` inlined, ``anyOf [X, null]`` written as ``X`` with
``nullable: true``, durations as strings with a Go-duration ``pattern`` (and Go-style defaults such as
``5m``), enums kept, titles dropped, ``additionalProperties: false`` dropped (the API server prunes
unknown fields and, with kubectl's default strict field validation, rejects them). Anything the
converter does not know raises :class:`UnsupportedSchema`, so a model change that Kubernetes cannot
express fails the generator instead of producing a CRD the API server would refuse.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from fsm.models import (
    API_GROUP,
    API_VERSION,
    MAX_DURATION_LENGTH,
    MAX_DURATION_TEXT,
    FailoverGroupSpec,
    FailoverSpec,
    format_duration,
)

# Go durations as parse_duration accepts them from a manifest ("90s", "5m", "1h30m", "1.5h").
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
# The models' ceiling (and floor) of a duration, as the API server checks it: CEL's duration() parses
# the Go duration (an overflowing one such as 99999999999999h is an error, so refused as well).
DURATION_RULE = {
    "rule": f"duration(self) > duration('0s') && duration(self) <= duration('{MAX_DURATION_TEXT}')",
    "message": f"must be a positive duration of at most {MAX_DURATION_TEXT} (7 days)",
}

IMMUTABLE_SPEC_RULE = {"rule": "self == oldSelf", "message": "spec is immutable: create a new Failover"}

LABELS = {
    "app.kubernetes.io/name": "failover-orchestrator",
    "app.kubernetes.io/part-of": "failover-orchestrator",
}

# Keys a node of a pydantic JSON schema may carry, and what becomes of each.
_KEPT = (
    "description",
    "type",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "default",
    "required",
    "x-kubernetes-validations",
)
_DROPPED = ("title", "$defs")
_HANDLED = ("$ref", "anyOf", "const", "properties", "items", "additionalProperties", "format")

# What `kubectl explain` shows; the models carry no field descriptions, docs/API.md is the source.
_FAILOVER_SPEC_DOCS: dict[str, dict[str, Any]] = {
    "": {"description": "A one-shot request to move groups to another cluster. Immutable once created."},
    "targetCluster": {"description": "The cluster (kubeconfig context) that becomes active."},
    "failoverMode": {
        "description": "CONSISTENCY: source fully down before the target starts (never two writers). "
        "UPTIME: target up and serving before the source stands down."
    },
    "force": {
        "description": "The source may be unreachable: source-side steps that cannot reach it are "
        "skipped once its heartbeat is stale, and the skip is recorded."
    },
    "reason": {"description": "Free text; goes into the history."},
    "failoverGroups": {"description": "The FailoverGroups to move (at least one)."},
    "failoverGroups[].namespace": {"description": "Defaults to the Failover's own namespace."},
    "dryRun": {
        "description": "Build the plan and the list of object changes per cluster, write it to status, "
        "change nothing."
    },
}

_FAILOVER_GROUP_SPEC_DOCS: dict[str, dict[str, Any]] = {
    "": {"description": "The set of resources that move together, by name, in every cluster."},
    "operatorID": {"description": "Which orchestrator deployment owns the group; shared by its clusters."},
    "suspended": {"description": "No automatic failover while true (manual ones still run)."},
    "timeouts.transitoryState": {
        "description": "Longest a failover may stay in flight before it is failed and compensated."
    },
    "timeouts.unhealthyPrimary": {
        "description": "How long the active cluster may report ERROR before automatic failover."
    },
    "timeouts.heartbeat": {"description": "No heartbeat for this long means the cluster is down."},
    "heartbeatInterval": {"description": "How often each cluster writes its heartbeat."},
    "objectives.rto": {
        "description": "Longest a failover may take (start to completion): drills and the predicted "
        "RTO are judged against it."
    },
    "workloads[].volumeReplications": {"description": "VolumeReplications holding the workload's data."},
    "allowedFailoverNamespaces": {
        "description": "Namespaces whose Failovers may move this group, besides its own (a Failover "
        "naming a group of another namespace without this grant is invalid)."
    },
    "fluxResources[].triggerReconcile": {
        "description": "Request a reconcile (reconcile.fluxcd.io/requestedAt) when resuming."
    },
}


class UnsupportedSchema(ValueError):
    """A model uses a JSON-schema construct that a Kubernetes structural schema cannot express."""


class _KubernetesJsonSchema(GenerateJsonSchema):
    """Pydantic's generator with durations as Go-duration strings (as manifests write them)."""

    def timedelta_schema(self, schema: core_schema.TimedeltaSchema) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": MAX_DURATION_LENGTH,
            "x-kubernetes-validations": [dict(DURATION_RULE)],
        }

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The Kubernetes structural schema of ``model`` (wire names, validation mode). Pure."""
    schema = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_KubernetesJsonSchema)
    return _convert(schema, schema.get("$defs", {}), path=model.__name__)


def _resolve(ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise UnsupportedSchema(f"cannot inline $ref {ref!r}")
    resolved: dict[str, Any] = defs[ref[len(prefix) :]]
    return resolved


def _convert(node: dict[str, Any], defs: dict[str, Any], *, path: str) -> dict[str, Any]:
    unknown = set(node) - set(_KEPT) - set(_DROPPED) - set(_HANDLED)
    if unknown:
        raise UnsupportedSchema(f"{path}: unsupported keys {sorted(unknown)}")
    if "$ref" in node:
        # Siblings of a $ref (a field's description or default) win over the referenced schema's.
        merged = {**_resolve(node["$ref"], defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs, path=path)
    out: dict[str, Any] = {}
    if "anyOf" in node:
        choices = [c for c in node["anyOf"] if c != {"type": "null"}]
        if len(choices) != 1 or len(node["anyOf"]) != 2:
            raise UnsupportedSchema(f"{path}: only 'X or null' unions are supported, got {node['anyOf']}")
        out.update(_convert(choices[0], defs, path=path))
        out["nullable"] = True
    for key in _KEPT:
        if key in node:
            out[key] = copy.deepcopy(node[key])
    if out.get("default", ...) is None:
        del out["default"]  # null default: the field is simply absent
    if "const" in node:
        out["enum"] = [node["const"]]
    if "format" in node:
        raise UnsupportedSchema(f"{path}: format {node['format']!r} has no Kubernetes equivalent here")
    if "properties" in node:
        out["properties"] = {
            name: _convert(child, defs, path=f"{path}.{name}") for name, child in node["properties"].items()
        }
    if "items" in node:
        out["items"] = _convert(node["items"], defs, path=f"{path}[]")
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = _convert(additional, defs, path=f"{path}{{}}")
    elif additional is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise UnsupportedSchema(f"{path}: a structural schema needs a type on every node")
    return out


def _overlay(schema: dict[str, Any], extras: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``schema`` with ``extras`` merged in at dotted paths (``a.b``, ``list[].field``)."""
    result = copy.deepcopy(schema)
    for path, values in extras.items():
        node = result
        for part in filter(None, path.split(".")):
            name, items = (part[:-2], True) if part.endswith("[]") else (part, False)
            try:
                node = node["properties"][name]
                if items:
                    node = node["items"]
            except KeyError as error:
                raise UnsupportedSchema(f"no field at {path!r} to describe or bound") from error
        node.update(values)
    return result


# The FailoverGroup status fields the schema names (the rest is kept as written: preserve unknown fields).
_QUANTILES = {"type": "object", "properties": {"p50": {"type": "number"}, "p95": {"type": "number"}}}
_GROUP_STATUS: dict[str, Any] = {
    "forecast": {
        "type": "object",
        "description": "Predicted RTO per failover mode, from the group's own history (new).",
        "properties": {
            "objectiveSeconds": {"type": "number"},
            "modes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {
                        "mode": {"type": "string"},
                        "runs": {"type": "integer"},
                        "totalSeconds": _QUANTILES,
                        "meetsObjective": {"type": "boolean"},
                        "summary": {"type": "string"},
                    },
                },
            },
        },
    }
}


def _object_schema(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    described: dict[str, Any] = {"properties": copy.deepcopy(status)} if status else {}
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {
                "type": "object",
                "description": "Written by the orchestrator (see docs/API.md of failover-orchestrator).",
                "x-kubernetes-preserve-unknown-fields": True,
                **described,
            },
        },
    }


def _column(name: str, json_path: str, kind: str = "string", description: str = "") -> dict[str, Any]:
    column = {"name": name, "type": kind, "jsonPath": json_path}
    if description:
        column["description"] = description
    return column


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}", "labels": dict(LABELS)},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["failover-orchestrator"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *columns,
                        _column("Age", ".metadata.creationTimestamp", "date"),
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def failover_crd() -> dict[str, Any]:
    """The ``Failover`` CRD: spec from :class:`fsm.models.FailoverSpec`, immutable by CEL. Pure."""
    # The models bound every string and list: the API server estimates the cost of the CEL rule
    # `self == oldSelf` from the largest possible spec, and an unbounded one exceeds the budget.
    spec = _overlay(structural_schema(FailoverSpec), _FAILOVER_SPEC_DOCS)
    spec["x-kubernetes-validations"] = [dict(IMMUTABLE_SPEC_RULE)]
    return _crd(
        kind="Failover",
        plural="failovers",
        short_names=["fo"],
        schema=_object_schema(spec),
        columns=[
            _column(
                "Status", ".status.status", description="PENDING, IN_PROGRESS, SUCCESS, FAILED or CANCELLED"
            ),
            _column("State", ".status.state", description="The current step, or PAUSED"),
            _column("Target", ".spec.targetCluster"),
            _column("Mode", ".spec.failoverMode"),
        ],
    )


def failover_group_crd() -> dict[str, Any]:
    """The ``FailoverGroup`` CRD: spec from :class:`fsm.models.FailoverGroupSpec`. Pure."""
    spec = _overlay(structural_schema(FailoverGroupSpec), _FAILOVER_GROUP_SPEC_DOCS)
    return _crd(
        kind="FailoverGroup",
        plural="failovergroups",
        short_names=["fg"],
        schema=_object_schema(spec, _GROUP_STATUS),
        columns=[
            _column("Health", ".status.health", description="OK, DEGRADED, ERROR or UNKNOWN"),
            _column(
                "Suspended",
                ".spec.suspended",
                "boolean",
                description="No automatic failover while true (the API server defaults it to false)",
            ),
            _column("Active", ".status.globalState.activeCluster", description="The active cluster"),
        ],
    )


def custom_resource_definitions() -> list[dict[str, Any]]:
    """Both CRDs, FailoverGroup first (a Failover names groups). Pure."""
    return [failover_group_crd(), failover_crd()]
