"""Fault knobs, the down switch, token auth and the independence of clusters in a fleet."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster, SandboxFleet, write_kubeconfig
from tests.sandbox.conftest import ClientFactory
from tests.sandbox.helpers import deployment, raw_request, status_body, wait_for

pytestmark = pytest.mark.integration


def test_latency_delays_every_request(still: SandboxCluster, api: ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.list_namespace()
    still.faults.latency = 0.2
    started = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - started >= 0.2
    still.faults.latency = 0
    started = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize(
    ("code", "reason"), [(500, "InternalError"), (503, "ServiceUnavailable"), (429, "TooManyRequests")]
)
def test_injected_server_errors(still: SandboxCluster, api: ApiClient, code: int, reason: str) -> None:
    core = client.CoreV1Api(api)
    still.faults.retry_after = 2
    still.faults.fail_next(1, code)
    with pytest.raises(ApiException) as exc:
        core.patch_namespace("default", {"metadata": {"labels": {"a": "b"}}})
    assert exc.value.status == code
    assert status_body(exc.value)["reason"] == reason
    if code == 429:
        assert exc.value.headers["Retry-After"] == "2"
        assert status_body(exc.value)["details"]["retryAfterSeconds"] == 2
    # Only the next request failed.
    assert core.patch_namespace("default", {"metadata": {"labels": {"a": "b"}}}).metadata.labels == {"a": "b"}


def test_a_429_get_is_retried_by_the_client_after_retry_after(still: SandboxCluster, api: ApiClient) -> None:
    # urllib3 (under the official client) honours Retry-After on idempotent requests, as with a real server.
    core = client.CoreV1Api(api)
    core.read_namespace("default")
    still.faults.retry_after = 1
    still.faults.fail_next(1, 429)
    started = time.monotonic()
    assert core.read_namespace("default").metadata.name == "default"
    assert time.monotonic() - started >= 1


def test_error_rate(still: SandboxCluster, api: ApiClient) -> None:
    core = client.CoreV1Api(api)
    still.faults.error_rate, still.faults.error_codes = 1.0, (503,)
    with pytest.raises(ApiException) as exc:
        core.list_namespace()
    assert exc.value.status == 503
    still.faults.error_rate = 0.5
    still.faults.reseed(7)
    outcomes = []
    for _ in range(30):
        try:
            core.list_namespace()
            outcomes.append("ok")
        except ApiException as failure:
            outcomes.append(str(failure.status))
    assert {"ok", "503"} == set(outcomes)
    still.faults.reset()
    assert core.list_namespace().items


def test_forced_conflicts_on_the_next_writes(still: SandboxCluster, api: ApiClient) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    still.faults.conflict_next(2)
    for _ in range(2):
        apps.read_namespaced_deployment("web", "default")  # reads do not use up the conflicts
        with pytest.raises(ApiException) as exc:
            apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
        assert status_body(exc.value)["reason"] == "Conflict"
    assert apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}}).spec.replicas == 2
    assert still.faults.pending_conflicts == 0


def test_forbidden_verbs_get_an_rbac_message(still: SandboxCluster, api: ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web"))
    still.faults.forbid("patch", "deployments")
    still.faults.forbid("list", "namespaces")
    still.faults.forbid("update", "deployments/scale")
    with pytest.raises(ApiException) as patch:
        apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    body = status_body(patch.value)
    assert (patch.value.status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == (
        'deployments.apps "web" is forbidden: User "sandbox-user" cannot patch resource '
        '"deployments" in API group "apps" in the namespace "default"'
    )
    assert apps.read_namespaced_deployment("web", "default").spec.replicas == 1  # get is still allowed

    with pytest.raises(ApiException) as listing:
        core.list_namespace()
    assert status_body(listing.value)["message"] == (
        'namespaces is forbidden: User "sandbox-user" cannot list resource "namespaces" in API group "" '
        "at the cluster scope"
    )

    scale = apps.read_namespaced_deployment_scale("web", "default")
    with pytest.raises(ApiException) as scaling:
        apps.replace_namespaced_deployment_scale("web", "default", scale)
    assert 'cannot update resource "deployments/scale"' in status_body(scaling.value)["message"]

    still.faults.allow("patch", "deployments")
    assert apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}}).spec.replicas == 2


def test_down_refuses_connections_keeps_state_and_comes_back_on_the_same_port(
    site_a: SandboxCluster, api: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment("default", deployment("web"))
    url, port = site_a.url, site_a.port
    site_a.set_down(True)
    assert site_a.is_down
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        apps.read_namespaced_deployment("web", "default", _request_timeout=2)  # its pooled connection was cut

    site_a.set_down(False)
    assert (site_a.url, site_a.is_down) == (url, False)
    again = apps.read_namespaced_deployment("web", "default")
    assert again.metadata.uid == created.metadata.uid
    wait_for(
        lambda: (d := apps.read_namespaced_deployment("web", "default")).status and d.status.ready_replicas
    )


def test_clusters_of_a_fleet_are_independent(fleet: SandboxFleet, clients: ClientFactory) -> None:
    a, b = client.AppsV1Api(clients("site-a")), client.AppsV1Api(clients("site-b"))
    a.create_namespaced_deployment("default", deployment("only-on-a"))
    assert b.list_namespaced_deployment("default").items == []
    fleet["site-a"].faults.fail_next(5, 503)
    assert b.list_namespaced_deployment("default").items == []
    fleet["site-a"].faults.reset()
    fleet["site-a"].set_down(True)
    b.create_namespaced_deployment("default", deployment("only-on-b"))
    fleet["site-a"].set_down(False)
    assert [d.metadata.name for d in a.list_namespaced_deployment("default").items] == ["only-on-a"]
    assert fleet["site-a"].port != fleet["site-b"].port


def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    with SandboxCluster("secure", token="s3cret", run_controllers=False, install_rbac=False) as cluster:
        path = write_kubeconfig([cluster], tmp_path / "kubeconfig")
        code, _, _ = raw_request(cluster.url, "GET", "/api/v1/namespaces")
        assert code == 401
        api = config.new_client_from_config(config_file=str(path), context="secure")
        try:
            assert "default" in [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
        finally:
            api.close()


def test_a_fleet_stops_everything_it_started(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with SandboxFleet(["x", "y"], kubeconfig_path=tmp_path / "kc", install_rbac=False) as fleet:
        ports = [c.port for c in fleet]
        api = config.new_client_from_config(config_file=str(fleet.kubeconfig_path), context="y")
        client.CoreV1Api(api).list_namespace()
        api.close()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert set(threading.enumerate()) <= before
    temporary = SandboxFleet(["z"])  # no path: a temporary kubeconfig, chosen on start, removed on exit
    with pytest.raises(RuntimeError):
        _ = temporary.kubeconfig_path
    with temporary:
        path = temporary.kubeconfig_path
        assert path.exists()
    assert not path.exists()
