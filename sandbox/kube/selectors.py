"""Label and field selectors, parsed and matched the way kube-apiserver does.

Label selectors support equality (``a=b``, ``a==b``, ``a!=b``), sets (``a in (x,y)``, ``a notin (x)``)
and existence (``a``, ``!a``). Field selectors support ``=``, ``==`` and ``!=`` on the fields a real
server allows for the kind (``metadata.name``, ``metadata.namespace`` and a per-kind list); any other
field is a 400, as on a real cluster. This module only parses and matches; it must not read the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from sandbox.kube.errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\((.*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (set values contain commas)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _label_matches(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op in ("in", "="):
        return labels.get(key) in values
    if op in ("notin", "!="):
        return labels.get(key) not in values  # a missing label satisfies != and notin, as upstream
    if op == "exists":
        return key in labels
    return key not in labels


Requirement = tuple[str, str, frozenset[str]]


@lru_cache(maxsize=4096)
def _requirements(text: str) -> tuple[Requirement, ...]:
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        if match := _SET_RE.match(part):
            key, op, raw = match.groups()
            requirements.append((key, op, frozenset(v.strip() for v in raw.split(",") if v.strip())))
        elif match := _EQ_RE.match(part):
            key, op, value = match.groups()
            requirements.append((key, "!=" if op == "!=" else "=", frozenset([value])))
        elif match := _EXISTS_RE.match(part):
            negate, key = match.groups()
            requirements.append((key, "!" if negate else "exists", frozenset()))
        else:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
    return tuple(requirements)


def parse_label_selector(text: str | None) -> Matcher:
    """Compile a label selector string; an empty selector matches everything."""
    requirements = _requirements(text or "")

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(_label_matches(labels, *requirement) for requirement in requirements)

    return matches


def indexable_requirements(text: str | None) -> list[tuple[str, frozenset[str]]]:
    """The (key, allowed values) of a selector's ``=``/``==``/``in`` requirements: what a label index
    can answer (every matching object has one of those values); the rest needs the full matcher."""
    return [(key, values) for key, op, values in _requirements(text or "") if op in ("=", "in")]


def _field_value(obj: dict[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def parse_field_selector(text: str | None, allowed: Iterable[str] = ()) -> Matcher:
    """Compile a field selector; fields beyond metadata.name/namespace and ``allowed`` are a 400."""
    supported = {"metadata.name", "metadata.namespace", *allowed}
    requirements: list[tuple[str, bool, str]] = []
    for part in _split_top_level(text or ""):
        match = _EQ_RE.match(part)
        if not match:
            raise bad_request(f"invalid selector: {text!r}; can't understand {part.strip()!r}")
        path, op, value = match.groups()
        if path not in supported:
            raise bad_request(f"field label not supported: {path}")
        requirements.append((path, op != "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)

    return matches


def selector_string(selector: dict[str, Any] | None) -> str:
    """Render a ``LabelSelector`` (matchLabels/matchExpressions) as the string form Scale uses."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def label_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    """Match a structured ``LabelSelector`` (matchLabels + matchExpressions); None or ``{}`` matches all.

    The form admission policies, bindings and paramRefs carry, as opposed to the string form of a
    list request's ``labelSelector`` query parameter.
    """
    labels = labels or {}
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
