"""The fault knobs a flaky day is made of: timeouts, resets, scoping per verb and resource, seeds."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster
from sandbox.kube.faults import FaultKnobs
from tests.sandbox.helpers import deployment

pytestmark = pytest.mark.integration


def _get(cluster: SandboxCluster, path: str, timeout: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_timeout_holds_the_request_unanswered_then_cuts_it(still: SandboxCluster) -> None:
    still.faults.hold = 0.6
    still.faults.drop_next(1, "timeout")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        _get(still, "/api/v1/namespaces/default", timeout=0.3)  # the client gives up first
    assert time.monotonic() - started < 0.5
    # Once the hold is over the server cuts the connection without an answer.
    conn = http.client.HTTPConnection("127.0.0.1", still.port, timeout=5)
    still.faults.drop_next(1, "timeout")
    started = time.monotonic()
    conn.request("GET", "/api/v1/namespaces/default")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()
    assert 0.5 < time.monotonic() - started < 2.0
    conn.close()
    assert _get(still, "/api/v1/namespaces/default", timeout=2) == 200
    assert still.faults.injected["timeout"] == 2


def test_a_timed_out_write_is_not_applied(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    still.faults.hold = 0.5
    still.faults.drop_next(1, "timeout")
    with pytest.raises(Exception, match=r"timed out"):
        apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}}, _request_timeout=0.2)
    assert apps.read_namespaced_deployment("web", "default").spec.replicas == 1


def test_a_reset_closes_the_connection_without_an_answer(still: SandboxCluster) -> None:
    still.faults.drop_next(1, "reset")
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        _get(still, "/api/v1/namespaces/default", timeout=2)
    assert _get(still, "/api/v1/namespaces/default", timeout=2) == 200
    assert still.faults.injected["reset"] == 1


def test_held_requests_are_released_when_the_server_stops(site_a: SandboxCluster) -> None:
    site_a.faults.hold = 60.0
    site_a.faults.timeout_rate = 1.0
    before = threading.active_count()
    probes = [threading.Thread(target=_ignore_errors, args=(site_a,), daemon=True) for _ in range(3)]
    for probe in probes:
        probe.start()
    deadline = time.monotonic() + 5
    while site_a.faults.injected["timeout"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert site_a.faults.injected["timeout"] == 3
    started = time.monotonic()
    site_a.set_down(True)  # joins every handler thread: the held ones must let go at once
    assert time.monotonic() - started < 2.0
    site_a.faults.reset()
    site_a.set_down(False)
    for probe in probes:
        probe.join(timeout=5)
    assert threading.active_count() <= before + 1
    assert _get(site_a, "/api/v1/namespaces/default", timeout=2) == 200


def _ignore_errors(cluster: SandboxCluster) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        _get(cluster, "/api/v1/namespaces/default", timeout=30)


def test_faults_can_be_scoped_to_one_verb_and_resource(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    still.faults.error_rate, still.faults.error_codes = 1.0, (503,)
    still.faults.scope(("patch", "deployments.apps"))
    for _ in range(5):  # reads and other kinds go through
        assert apps.read_namespaced_deployment("web", "default").spec.replicas == 1
        client.CoreV1Api(api).list_namespace()
    with pytest.raises(ApiException) as raised:
        apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    assert raised.value.status == 503
    still.faults.scope(("*", "deployments"))
    with pytest.raises(ApiException):
        apps.read_namespaced_deployment("web", "default")
    still.faults.scope()
    with pytest.raises(ApiException):
        client.CoreV1Api(api).list_namespace()
    still.faults.reset()
    assert apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}}).spec.replicas == 2


def test_a_seed_repeats_the_same_faults() -> None:
    def draws(seed: int) -> list[str]:
        knobs = FaultKnobs(error_rate=0.2, timeout_rate=0.1, reset_rate=0.1, seed=seed)
        seen = []
        for _ in range(200):
            try:
                knobs.check("get", "deployments", "apps", namespace="shop", name="web")
                seen.append("ok")
            except Exception as fault:
                seen.append(type(fault).__name__ + str(getattr(fault, "code", getattr(fault, "how", ""))))
        return seen

    first = draws(11)
    assert first == draws(11)
    assert first != draws(12)
    counts = {outcome: first.count(outcome) for outcome in set(first)}
    assert 100 < counts["ok"] < 160  # 60 % ok
    assert counts.get("Droppedtimeout", 0) > 5 and counts.get("Droppedreset", 0) > 5


def test_injected_faults_never_hit_discovery(still: SandboxCluster) -> None:
    still.faults.timeout_rate, still.faults.hold = 1.0, 5.0
    assert _get(still, "/apis", timeout=2) == 200
    with socket.create_connection(("127.0.0.1", still.port), timeout=2):
        pass
    still.faults.reset()
