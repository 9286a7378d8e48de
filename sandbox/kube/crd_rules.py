"""CRD validation rules (``x-kubernetes-validations``) enforced on custom resources, as a real server does.

A CRD's structural schema may carry CEL rules at any level; the API server evaluates each rule with
``self`` bound to the value at that level (and ``oldSelf`` to the previous value on an update), and
refuses the write with 422 Invalid naming the field. That is how this project's CRDs make a Failover's
spec immutable (``self == oldSelf``), so the sandbox must enforce it for the product's writes to meet
the same refusals as on a cluster. Semantics kept from upstream:

- a rule runs only where the value is present (an absent optional field has no ``self``);
- a transition rule (one that mentions ``oldSelf``) runs only on update, and only where the old value
  can be correlated (object properties, map values, ``x-kubernetes-list-type: map`` items);
- ratcheting (on by default since Kubernetes 1.30): on update, a value equal to its old value is not
  re-validated, so tightening a rule does not lock existing objects;
- ``message``/``messageExpression`` (falling back to ``failed rule: <rule>``), ``fieldPath`` appended
  to the rule's path, and ``reason`` choosing the cause (Invalid, Forbidden, Required, Duplicate).

Only the rules are enforced: types, enums and required fields of the schema are not (the sandbox keeps
serving what it is given); its defaults are applied (crd_defaults.py). This module only checks dicts;
it must not store anything.
"""

from __future__ import annotations

import json
from typing import Any

from sandbox.kube import expressions
from sandbox.kube.errors import invalid_causes
from sandbox.kube.kinds import ResourceKind

_MISSING = object()
_REASONS = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
}


def version_schema(crd: dict[str, Any], version: str | None) -> dict[str, Any] | None:
    """The ``openAPIV3Schema`` of ``version`` (the storage version if None) in a CRD object."""
    versions = (crd.get("spec") or {}).get("versions") or []
    for entry in versions:
        if entry.get("name") == version or (version is None and entry.get("storage")):
            return (entry.get("schema") or {}).get("openAPIV3Schema")
    return None


def check(
    kind: ResourceKind, schema: dict[str, Any] | None, obj: dict[str, Any], old: dict[str, Any] | None
) -> None:
    """Raise 422 Invalid (every failed rule a cause) if ``obj`` breaks a rule of ``schema``."""
    if not schema:
        return
    causes: list[dict[str, str]] = []
    _walk(schema, obj, old if old is not None else _MISSING, "", causes)
    if causes:
        raise invalid_causes(kind.kind, kind.group, obj["metadata"]["name"], causes)


def _join(path: str, child: str) -> str:
    if child.startswith("["):
        return path + child
    return f"{path}.{child}" if path else child


def _walk(schema: dict[str, Any], value: Any, old: Any, path: str, causes: list[dict[str, str]]) -> None:
    if value is None:
        return
    if old is not _MISSING and value == old:
        return  # ratcheting: an unchanged value is not validated again
    for rule in schema.get("x-kubernetes-validations") or []:
        cause = _check_rule(rule, schema, value, old, path)
        if cause is not None:
            causes.append(cause)
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) else {}
        for name, child_schema in (schema.get("properties") or {}).items():
            if name in value and isinstance(child_schema, dict):
                _walk(child_schema, value[name], old_map.get(name, _MISSING), _join(path, name), causes)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, child in value.items():
                _walk(extra, child, old_map.get(key, _MISSING), f"{path}[{key}]", causes)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        keys = schema.get("x-kubernetes-list-map-keys") or []
        old_items = old if isinstance(old, list) and schema.get("x-kubernetes-list-type") == "map" else []
        for index, child in enumerate(value):
            match = _MISSING
            if keys and isinstance(child, dict):
                ident = [child.get(k) for k in keys]
                match = next(
                    (o for o in old_items if isinstance(o, dict) and [o.get(k) for k in keys] == ident),
                    _MISSING,
                )
            _walk(items, child, match, f"{path}[{index}]", causes)


def _check_rule(
    rule: dict[str, Any], schema: dict[str, Any], value: Any, old: Any, path: str
) -> dict[str, str] | None:
    text = rule.get("rule") or ""
    mentioned = expressions.references(text)
    if "oldSelf" in mentioned and old is _MISSING:
        return None  # a transition rule: nothing to compare with on create
    context: dict[str, Any] = {"self": value}
    if old is not _MISSING:
        context["oldSelf"] = old
    bindings = expressions.Bindings(context)  # the rule and its messageExpression convert them once
    field = path
    if rule.get("fieldPath"):
        field = _join(path, str(rule["fieldPath"]).lstrip("."))
    shown = json.dumps(schema.get("type", ""))
    try:
        passed = bindings.evaluate(text)
    except expressions.EvaluationError as exc:
        return _cause("FieldValueInvalid", field, f"Invalid value: {shown}: {exc}")
    if passed is True:
        return None
    message = rule.get("message") or f"failed rule: {text}"
    if rule.get("messageExpression"):
        try:
            result = bindings.evaluate(rule["messageExpression"])
            if isinstance(result, str) and result.strip() and "\n" not in result:
                message = result
        except expressions.EvaluationError:
            pass  # upstream falls back to the static message
    reason = rule.get("reason") or "FieldValueInvalid"
    label = _REASONS.get(reason, "Invalid value")
    shows_value = label in ("Invalid value", "Duplicate value")
    detail = f"{label}: {shown}: {message}" if shows_value else f"{label}: {message}"
    return _cause(reason, field, detail)


def _cause(reason: str, field: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def compile_errors(crd: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, error)`` for every rule of a CRD that does not compile (the CRD itself is then refused)."""
    found: list[tuple[str, str]] = []

    def visit(schema: Any, path: str) -> None:
        if not isinstance(schema, dict):
            return
        for index, rule in enumerate(schema.get("x-kubernetes-validations") or []):
            for key in ("rule", "messageExpression"):
                if rule.get(key):
                    try:
                        expressions.program(rule[key])
                    except expressions.CompileError as exc:
                        found.append((f"{path}.x-kubernetes-validations[{index}].{key}", str(exc)))
        for name, child in (schema.get("properties") or {}).items():
            visit(child, f"{path}.properties[{name}]")
        visit(schema.get("items"), f"{path}.items")
        visit(schema.get("additionalProperties"), f"{path}.additionalProperties")

    for index, version in enumerate((crd.get("spec") or {}).get("versions") or []):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        visit(schema, f"spec.versions[{index}].schema.openAPIV3Schema")
    return found
