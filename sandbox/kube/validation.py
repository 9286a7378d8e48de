"""Defaulting and validation for the built-in kinds, the subset a real server enforces that matters here.

Defaults are what the real API server fills in on every write (``spec.replicas: 1``, CronJob
``suspend: false``...), so clients read back the same shape as from a real cluster. Validation rejects
with 422 what a real server would obviously reject (missing name, selector not matching the template,
negative replicas, an immutable selector changed, a CRD named wrongly). Custom resources are not
schema-validated here (their CEL rules are: crd_rules.py), and CEL that does not compile is refused
in policies and CRDs. This module only inspects and fills dicts; it must not store anything.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.kube import crd_rules, expressions
from sandbox.kube.errors import ApiError, invalid, invalid_causes
from sandbox.kube.kinds import ResourceKind

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def validate_name(kind: ResourceKind, name: str) -> None:
    """Names are DNS subdomains (namespaces: DNS labels); events may carry dots and digits too."""
    as_label = kind.key == "namespaces"
    pattern, message, limit = (_LABEL, _LABEL_MSG, 63) if as_label else (_SUBDOMAIN, _SUBDOMAIN_MSG, 253)
    if len(name) > limit or not pattern.match(name):
        raise invalid(
            kind.kind,
            kind.group,
            name,
            "metadata.name",
            f'Invalid value: "{name}": {message}',
            cause="FieldValueInvalid",
        )


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        obj["spec"] = spec
    return spec


def apply_defaults(kind: ResourceKind, obj: dict[str, Any]) -> None:
    """Fill the defaults the real API server's defaulting functions set on every write."""
    key = kind.key
    if key in ("deployments.apps", "statefulsets.apps", "replicasets.apps"):
        spec = _spec(obj)
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        if key == "deployments.apps":
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            )
        elif key == "statefulsets.apps":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
            spec.setdefault(
                "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
            )
    elif key == "cronjobs.batch":
        spec = _spec(obj)
        spec.setdefault("suspend", False)
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
    elif key == "jobs.batch":
        spec = _spec(obj)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
    elif key == "namespaces":
        _spec(obj).setdefault("finalizers", ["kubernetes"])


def initial_status(kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any] | None:
    """Status a real server sets on create for kinds whose status clients cannot write on create."""
    if kind.key == "namespaces":
        return {"phase": "Active"}
    if kind.key == "pods":
        return {"phase": "Pending", "qosClass": "BestEffort"}
    return None


def _require(kind: ResourceKind, name: str, obj: dict[str, Any], path: str) -> Any:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if current is None or current == {}:
        raise invalid(kind.kind, kind.group, name, path, "Required value")
    return current


def _validate_workload(
    kind: ResourceKind, name: str, obj: dict[str, Any], old: dict[str, Any] | None
) -> None:
    selector = _require(kind, name, obj, "spec.selector")
    _require(kind, name, obj, "spec.template")
    replicas = obj["spec"].get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(
            kind.kind,
            kind.group,
            name,
            "spec.replicas",
            f"Invalid value: {replicas!r}: must be greater than or equal to 0",
            cause="FieldValueInvalid",
        )
    labels = ((obj["spec"]["template"].get("metadata") or {}).get("labels")) or {}
    wanted = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        raise invalid(
            kind.kind,
            kind.group,
            name,
            "spec.template.metadata.labels",
            f"Invalid value: {labels!r}: `selector` does not match template `labels`",
            cause="FieldValueInvalid",
        )
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        raise invalid(
            kind.kind,
            kind.group,
            name,
            "spec.selector",
            f"Invalid value: {selector!r}: field is immutable",
            cause="FieldValueInvalid",
        )


def _validate_crd(kind: ResourceKind, name: str, obj: dict[str, Any]) -> None:
    spec = _require(kind, name, obj, "spec")
    group = _require(kind, name, obj, "spec.group")
    plural = _require(kind, name, obj, "spec.names.plural")
    _require(kind, name, obj, "spec.names.kind")
    if name != f"{plural}.{group}":
        raise invalid(
            kind.kind,
            kind.group,
            name,
            "metadata.name",
            f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            cause="FieldValueInvalid",
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        raise invalid(
            kind.kind,
            kind.group,
            name,
            "spec.scope",
            f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"',
            cause="FieldValueNotSupported",
        )
    versions = spec.get("versions") or []
    if not versions:
        raise invalid(kind.kind, kind.group, name, "spec.versions", "Required value")
    if sum(1 for v in versions if v.get("storage")) != 1:
        raise invalid(
            kind.kind,
            kind.group,
            name,
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
            cause="FieldValueInvalid",
        )


def _refuse_uncompiled(kind: ResourceKind, name: str, found: list[tuple[str, str]]) -> None:
    """A CEL expression that does not compile is refused when its policy or CRD is written, as upstream."""
    if found:
        causes = [
            {"reason": "FieldValueInvalid", "message": f"Invalid value: {error}", "field": field}
            for field, error in found
        ]
        raise invalid_causes(kind.kind, kind.group, name, causes)


def _validate_policy(kind: ResourceKind, name: str, obj: dict[str, Any]) -> None:
    spec = _require(kind, name, obj, "spec")
    found: list[tuple[str, str]] = []
    for section, keys in (
        ("validations", ("expression", "messageExpression")),
        ("matchConditions", ("expression",)),
        ("variables", ("expression",)),
    ):
        for index, entry in enumerate(spec.get(section) or []):
            for key in keys:
                if entry.get(key):
                    try:
                        expressions.program(entry[key])
                    except expressions.CompileError as exc:
                        found.append((f"spec.{section}[{index}].{key}", str(exc)))
    _refuse_uncompiled(kind, name, found)


def validate(kind: ResourceKind, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Raise a 422 :class:`ApiError` for what the real server's validation rejects outright."""
    name = obj["metadata"]["name"]
    key = kind.key
    try:
        if key in ("deployments.apps", "statefulsets.apps", "replicasets.apps"):
            _validate_workload(kind, name, obj, old)
        elif key == "cronjobs.batch":
            _require(kind, name, obj, "spec.schedule")
            _require(kind, name, obj, "spec.jobTemplate")
        elif key == "jobs.batch":
            _require(kind, name, obj, "spec.template")
        elif key == "customresourcedefinitions.apiextensions.k8s.io":
            _validate_crd(kind, name, obj)
            _refuse_uncompiled(kind, name, crd_rules.compile_errors(obj))
        elif key == "validatingadmissionpolicies.admissionregistration.k8s.io":
            _validate_policy(kind, name, obj)
        elif key == "validatingadmissionpolicybindings.admissionregistration.k8s.io":
            _require(kind, name, obj, "spec.policyName")
            _require(kind, name, obj, "spec.validationActions")
    except (AttributeError, TypeError) as exc:
        # A field of the wrong JSON type: the real decoder refuses it before validation runs.
        raise ApiError(
            400,
            "BadRequest",
            f'{kind.kind} in version "{kind.storage_version}" cannot be handled as a {kind.kind}: {exc}',
        ) from exc
