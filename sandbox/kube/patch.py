"""The three patch formats a sandbox cluster accepts: JSON merge, JSON patch and strategic merge.

* ``application/merge-patch+json`` (RFC 7386): maps merge, ``null`` deletes, lists replace.
* ``application/json-patch+json`` (RFC 6902): add/remove/replace/move/copy/test operations.
* ``application/strategic-merge-patch+json``: built-in kinds only (a real server answers 415 for
  custom resources). Lists of known Kubernetes types merge by their patch merge key (containers by
  ``name``, volumeMounts by ``mountPath``...), ``$patch``, ``$retainKeys``, ``$setElementOrder`` and
  ``$deleteFromPrimitiveList`` directives are honoured, which covers what ``kubectl apply``,
  ``kubectl patch`` and ``kubectl scale`` send.

Pure functions on plain dicts; this module must not touch the store, metadata rules or HTTP.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.kube.errors import ApiError, bad_request

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# patchMergeKey of list fields in the built-in types, by field name (the sandbox's kinds never reuse
# these names with a different key).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# Primitive lists with patchStrategy "merge": patch values are added, not substituted.
_MERGE_PRIMITIVE_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _patch_failed(message: str) -> ApiError:
    return ApiError(
        422, "Invalid", f"the server rejected our request due to an error in our request: {message}"
    )


def _container(doc: Any, tokens: list[str], path: str) -> Any:
    current = doc
    for token in tokens:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            raise _patch_failed(f"doc is missing path: {path!r}")
    return current


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    return _container(doc, tokens, path)


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _container(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _patch_failed(f"index out of range in {path!r}")
    else:
        raise _patch_failed(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise _patch_failed("cannot remove the whole document")
    parent = _container(doc, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise _patch_failed(f"unable to remove nonexistent key: {path!r}")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch; a failed ``test`` or a missing path is a 422 like the real server."""
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = (
                _add(_remove(doc, path), path, copy.deepcopy(op.get("value")))
                if _pointer(path)
                else op.get("value")
            )
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise _patch_failed(f"testing value {path} failed")
        else:
            raise bad_request(f"unexpected json patch operation {kind!r}")
    return doc


def _strategic_list(field: str, current: list[Any], patch: list[Any], order: list[Any] | None) -> list[Any]:
    key = _MERGE_KEYS.get(field)
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    if field in _MERGE_PRIMITIVE_LISTS:
        merged = list(current)
        merged.extend(v for v in patch if v not in merged)
        return merged
    if key is None or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(i) for i in current]
    for item in patch:
        index = next(
            (n for n, c in enumerate(merged) if isinstance(c, dict) and c.get(key) == item.get(key)), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    if order:
        keys = [o.get(key) if isinstance(o, dict) else o for o in order]
        merged.sort(key=lambda i: keys.index(i.get(key)) if i.get(key) in keys else len(keys))
    return merged


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for built-in kinds, directives included."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$"):
            if key.startswith("$deleteFromPrimitiveList/"):
                field = key.split("/", 1)[1]
                result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _strategic_list(key, result[key], value, patch.get(f"$setElementOrder/{key}"))
        elif isinstance(value, list):
            result[key] = _strategic_list(key, [], value, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply ``patch`` of the given media type; the caller decides which types a kind accepts."""
    if content_type == JSON_PATCH:
        result = json_patch(target, patch)
    elif content_type == MERGE_PATCH:
        result = merge_patch(target, patch)
    elif content_type == STRATEGIC_PATCH:
        result = strategic_merge_patch(target, patch)
    else:
        raise bad_request(f"unsupported patch type {content_type!r}")
    if not isinstance(result, dict):
        raise bad_request("patch did not produce an object")
    return result
