"""Small helpers shared by the sandbox tests (polling, raw HTTP, error bodies)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float = 5.0, interval: float = 0.01) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)
        value = probe()
    return value


def status_body(exc: ApiException) -> dict[str, Any]:
    """The decoded ``Status`` body of an API error."""
    body = json.loads(exc.body)
    assert body["kind"] == "Status", body
    return body


def raw_request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request to a sandbox server, for what the typed client cannot send."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def deployment(
    name: str, replicas: int = 1, image: str = "nginx:1", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A minimal valid apps/v1 Deployment body."""
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**selector, **(labels or {})}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def statefulset(name: str, replicas: int = 1) -> dict[str, Any]:
    body = deployment(name, replicas)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = name
    return body
