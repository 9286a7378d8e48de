"""Structural-schema defaults (``default:`` in a CRD's ``openAPIV3Schema``) applied to custom resources,
as a real API server does on create, on update and when it reads an object back.

Semantics kept from upstream (apiextensions-apiserver ``structuraldefaulting``):

- a property with a ``default`` that is absent from its object gets a copy of the default;
- a property present as ``null`` gets the default too, unless its schema is ``nullable: true`` (upstream
  prunes the null first, then defaults);
- defaulting goes top down: after a default is set its own properties are defaulted in turn, and every
  object met on the way is descended into: ``properties``, ``additionalProperties`` (each value) and
  ``items`` (each element of an array);
- a value given is never replaced, and nothing outside the schema is touched.

Defaults at the top (``metadata``, ``apiVersion``, ``kind``) are ignored, as upstream refuses them in a
CRD. This module only changes the dict it is given; it must not store anything.
"""

from __future__ import annotations

import copy
from typing import Any

_TOP_LEVEL_SKIPPED = ("apiVersion", "kind", "metadata")


def apply(schema: dict[str, Any] | None, obj: dict[str, Any]) -> None:
    """Fill the defaults of ``schema`` (a version's ``openAPIV3Schema``) into ``obj``, in place."""
    if not schema:
        return
    _object(schema, obj, skipped=_TOP_LEVEL_SKIPPED)


def _object(schema: dict[str, Any], value: dict[str, Any], *, skipped: tuple[str, ...] = ()) -> None:
    for name, child in (schema.get("properties") or {}).items():
        if name in skipped or not isinstance(child, dict):
            continue
        if "default" in child and (name not in value or (value[name] is None and not child.get("nullable"))):
            value[name] = copy.deepcopy(child["default"])
        if name in value:
            _descend(child, value[name])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        known = schema.get("properties") or {}
        for key, child_value in value.items():
            if key not in known:
                _descend(extra, child_value)


def _descend(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        _object(schema, value)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _descend(schema["items"], item)
