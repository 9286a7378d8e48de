"""API errors of the sandbox Kubernetes server, rendered as real ``Status`` objects.

Every failure the fake API server reports goes through :class:`ApiError`, so clients see the same
``{"kind": "Status", "reason": ..., "code": ...}`` body, message wording and ``details`` a real
kube-apiserver sends. This module builds errors; it must not know about HTTP handling or storage.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A Kubernetes API failure: HTTP ``code``, machine ``reason`` and human ``message``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        """The ``Status`` object a real server would send for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def qualified(plural: str, group: str) -> str:
    """``deployments.apps`` for grouped resources, ``pods`` for the core group (as the server says)."""
    return f"{plural}.{group}" if group else plural


def _details(name: str, plural: str, group: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(plural, group)} "{name}" not found', _details(name, plural, group)
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        _details(name, plural, group),
    )


def conflict(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        _details(name, plural, group),
    )


def invalid(
    kind: str, group: str, name: str, field: str, detail: str, *, cause: str = "FieldValueRequired"
) -> ApiError:
    """422 Invalid; ``detail`` is the validation text after the field (``Required value``...)."""
    qualified_kind = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": cause, "message": detail, "field": field}],
    }
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {field}: {detail}', details)


def invalid_causes(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid with several field errors (``causes``: reason, message, field), worded like upstream.

    One cause reads ``Kind.group "name" is invalid: <field>: <message>``; several are listed in
    brackets, comma-separated, as apimachinery's ``ErrorList`` renders them.
    """
    qualified_kind = f"{kind}.{group}" if group else kind
    rendered = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    details: dict[str, Any] = {"name": name, "kind": kind, "causes": causes}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
        {"causes": [{"reason": "UnsupportedMediaType", "message": content_type}]},
    )


def forbidden(
    user: str, verb: str, plural: str, group: str, *, namespace: str | None, name: str | None
) -> ApiError:
    """403 with the RBAC authorizer's wording, so log lines look like a real cluster's."""
    resource = plural.partition("/")[0]
    subject = qualified(resource, group)
    target = f'{subject} "{name}"' if name else subject
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{target} is forbidden: User "{user}" cannot {verb} resource "{plural}" '
        f'in API group "{group}" {scope}'
    )
    details: dict[str, Any] = {"kind": resource}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return ApiError(403, "Forbidden", message, details)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def gone(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def server_error(code: int, retry_after: int) -> ApiError:
    """An injected 500, 503 or 429; 429 carries ``Retry-After`` like API priority and fairness."""
    if code == 429:
        return ApiError(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            {"retryAfterSeconds": retry_after},
            {"Retry-After": str(retry_after)},
        )
    if code == 503:
        return ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request", {})
    return ApiError(code, "InternalError", "Internal error occurred: injected fault", {})
