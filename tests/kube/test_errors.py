"""How KubeEffects meets failures: 409s retried, the rest translated into workers.errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from sandbox.kube import SandboxCluster, SandboxFleet
from tests.kube.conftest import ref, stored
from workers.errors import (
    ClusterUnreachable,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OrchestratorError,
    PermanentError,
    TemporaryError,
)
from workers.kube import KubeClients, KubeEffects, Target
from workers.kube_client import RetryPolicy
from workers.ports import Role

pytestmark = pytest.mark.integration

WEB = ref("Deployment", "web")


def test_a_forced_conflict_is_retried_transparently(effects: KubeEffects, site_a: SandboxCluster) -> None:
    site_a.faults.conflict_next(1)
    change = effects.make_passive("site-a", WEB, epoch=3)
    assert change.changed
    assert site_a.faults.pending_conflicts == 0
    assert stored(site_a, WEB)["spec"]["replicas"] == 0


def test_endless_conflicts_end_in_conflict_error(effects: KubeEffects, site_a: SandboxCluster) -> None:
    site_a.faults.conflict_next(100)
    with pytest.raises(ConflictError) as raised:
        effects.make_passive("site-a", WEB, epoch=3)
    assert raised.value.cluster == "site-a" and raised.value.obj == "Deployment shop/web"
    assert "5 patches in a row got 409" in raised.value.message
    assert isinstance(raised.value.__cause__, ConflictError)
    assert stored(site_a, WEB)["spec"]["replicas"] == 3


class RacingClients(KubeClients):
    """Clients whose first read is followed by another writer's change, before our patch."""

    def __init__(self, *args: Any, cluster: SandboxCluster, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.raced = False

    def get(self, target: Target) -> dict[str, Any]:
        obj = super().get(target)
        if not self.raced:
            self.raced = True
            current = self.cluster.store.get("Deployment", "shop", "web")
            current["spec"]["replicas"] = 5  # e.g. an autoscaler
            self.cluster.store.update("Deployment", "shop", "web", current)
        return obj


def test_a_concurrent_write_makes_the_patch_conflict_and_is_not_lost(
    fleet: SandboxFleet, site_a: SandboxCluster
) -> None:
    clients = RacingClients(fleet.kubeconfig_path, cluster=site_a)
    try:
        change = KubeEffects(clients).make_passive("site-a", WEB, epoch=4)
    finally:
        clients.close()
    assert clients.raced
    # The first patch carried the resourceVersion read before the race and got 409; the retry
    # re-read and remembered the count the other writer set, not the stale 3.
    assert change.detail.startswith("replicas 5 -> 0 (remembered 5)")
    assert stored(site_a, WEB)["metadata"]["annotations"]["failover.hahomelabs.com/replicas"] == "5"


def test_a_missing_object_is_not_found_naming_it(effects: KubeEffects) -> None:
    missing = ref("StatefulSet", "nope")
    with pytest.raises(NotFoundError) as raised:
        effects.make_passive("site-b", missing, epoch=1)
    error = raised.value
    assert str(error) == "StatefulSet shop/nope not found on cluster 'site-b'"
    assert (error.cluster, error.obj) == ("site-b", "StatefulSet shop/nope")
    assert error.__cause__ is not None
    with pytest.raises(NotFoundError):
        effects.check("site-b", missing, Role.PASSIVE)


def test_a_kind_the_cluster_does_not_serve_is_permanent_naming_the_api(
    effects: KubeEffects, site_a: SandboxCluster
) -> None:
    site_a.store.delete("customresourcedefinitions", None, "helmreleases.helm.toolkit.fluxcd.io")
    with pytest.raises(PermanentError) as raised:
        effects.make_passive("site-a", ref("HelmRelease", "shop"), epoch=1)
    error = raised.value
    assert not isinstance(error, NotFoundError)
    assert "helm.toolkit.fluxcd.io/v2 is missing" in error.message
    assert (error.cluster, error.obj) == ("site-a", "HelmRelease shop/shop")


def test_rbac_denial_names_verb_and_resource(effects: KubeEffects, site_a: SandboxCluster) -> None:
    site_a.faults.forbid("patch", "deployments")
    with pytest.raises(ForbiddenError) as raised:
        effects.make_passive("site-a", WEB, epoch=1)
    error = raised.value
    assert error.message.startswith(
        "RBAC forbids patch on deployments (API group 'apps') in namespace 'shop'"
    )
    assert 'User "sandbox-user" cannot patch resource "deployments"' in error.message
    assert (error.cluster, error.obj) == ("site-a", "Deployment shop/web")
    site_a.faults.allow("patch", "deployments")
    site_a.faults.forbid("get", "virtualservices.networking.istio.io")
    with pytest.raises(ForbiddenError, match="RBAC forbids get on virtualservices"):
        effects.check("site-a", ref("VirtualService", "web"), Role.ACTIVE)


def test_a_long_retry_after_is_handed_to_the_engine_not_slept_through(
    effects: KubeEffects, site_a: SandboxCluster
) -> None:
    site_a.faults.retry_after = 7  # above RetryPolicy.retry_after_max: the engine waits it out
    site_a.faults.fail_next(1, 429)
    started = time.monotonic()
    with pytest.raises(TemporaryError) as raised:
        effects.check("site-a", WEB, Role.ACTIVE)
    assert time.monotonic() - started < 1.0  # no worker is held for it
    error = raised.value
    assert type(error) is TemporaryError
    assert error.retry_after == 7.0
    assert (error.cluster, error.obj) == ("site-a", "Deployment shop/web")
    assert effects.check("site-a", WEB, Role.ACTIVE).reached


def test_a_short_retry_after_is_honoured_and_the_read_retried(
    effects: KubeEffects, site_a: SandboxCluster
) -> None:
    site_a.faults.retry_after = 1
    site_a.faults.fail_next(1, 429)
    started = time.monotonic()
    with capture_logs() as logs:
        assert effects.check("site-a", WEB, Role.ACTIVE).reached
    assert 1.0 <= time.monotonic() - started < 2.5
    retried = [e for e in logs if e["event"] == "kube.request_retry"]
    assert [(e["attempt"], e["error"], e["verb"]) for e in retried] == [
        ("1 of 8", "429 Too Many Requests", "get")
    ]
    assert retried[0]["obj"] == "Deployment shop/web" and retried[0]["cluster"] == "site-a"
    assert effects.clients.retries == {"429": 1}


@pytest.mark.parametrize("code", [500, 503])
def test_server_errors_are_retried_per_request(
    effects: KubeEffects, site_a: SandboxCluster, code: int
) -> None:
    site_a.faults.fail_next(3, code)  # the read, and twice the patch (or three reads)
    assert effects.make_passive("site-a", WEB, epoch=1).changed
    assert stored(site_a, WEB)["spec"]["replicas"] == 0
    assert effects.clients.retries[str(code)] == 3


@pytest.mark.parametrize("how", ["timeout", "reset"])
def test_timeouts_and_resets_are_retried_and_a_repeated_patch_is_safe(
    effects: KubeEffects, site_a: SandboxCluster, how: str
) -> None:
    site_a.faults.hold = 1.5  # above the fixture's read timeout of 1 s
    effects.clients.timeout = (1.0, 1.0)
    site_a.faults.scope(("patch", "deployments"))
    site_a.faults.drop_next(1, how)
    assert effects.make_passive("site-a", WEB, epoch=1).changed
    assert stored(site_a, WEB)["spec"]["replicas"] == 0
    reason = "ReadTimeoutError" if how == "timeout" else "ProtocolError"
    assert effects.clients.retries == {reason: 1}


def test_persistent_server_errors_end_in_temporary_error_within_the_budget(
    fleet: SandboxFleet, site_a: SandboxCluster
) -> None:
    clients = KubeClients(fleet.kubeconfig_path, retry=RetryPolicy(seconds=1.0, backoff_max=0.2))
    site_a.faults.error_rate, site_a.faults.error_codes = 1.0, (503,)
    started = time.monotonic()
    try:
        with pytest.raises(TemporaryError) as raised:
            KubeEffects(clients).make_passive("site-a", WEB, epoch=1)
    finally:
        clients.close()
    assert time.monotonic() - started < 1.5
    assert type(raised.value) is TemporaryError
    assert "server error 503" in raised.value.message and "attempts in" in raised.value.message
    assert stored(site_a, WEB)["spec"]["replicas"] == 3


def test_retries_can_be_turned_off(fleet: SandboxFleet, site_a: SandboxCluster) -> None:
    clients = KubeClients(fleet.kubeconfig_path, retry=RetryPolicy().off)
    site_a.faults.fail_next(1, 500)
    try:
        with pytest.raises(TemporaryError, match="server error 500"):
            KubeEffects(clients).check("site-a", WEB, Role.ACTIVE)
    finally:
        clients.close()


def test_a_cluster_that_is_down_is_unreachable_quickly(effects: KubeEffects, site_b: SandboxCluster) -> None:
    assert effects.check("site-b", WEB, Role.PASSIVE).reached  # a pooled connection exists
    site_b.set_down(True)
    started = time.monotonic()
    vs = ref("VirtualService", "web")  # needs discovery first
    for r, call in (
        (WEB, lambda: effects.make_active("site-b", WEB, epoch=1)),
        (WEB, lambda: effects.check("site-b", WEB, Role.PASSIVE)),
        (WEB, lambda: effects.observe("site-b", WEB)),
        (vs, lambda: effects.make_active("site-b", vs, epoch=1)),
    ):
        with pytest.raises(ClusterUnreachable) as raised:
            call()
        assert (raised.value.cluster, raised.value.obj) == ("site-b", str(r))
        assert "cluster 'site-b' did not answer" in raised.value.message
    assert time.monotonic() - started < 2.0
    site_b.set_down(False)
    assert effects.make_active("site-b", WEB, epoch=1).changed


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers (a hung API server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_hung_server_times_out_as_unreachable(tmp_path: Path, silent_server: str) -> None:
    kubeconfig = tmp_path / "hung"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "hung", "cluster": {"server": silent_server}}],
                "users": [{"name": "hung", "user": {}}],
                "contexts": [{"name": "hung", "context": {"cluster": "hung", "user": "hung"}}],
                "current-context": "hung",
            }
        )
    )
    clients = KubeClients(kubeconfig, connect_timeout=0.5, read_timeout=0.5, retry=RetryPolicy(seconds=1.2))
    effects = KubeEffects(clients)
    started = time.monotonic()
    try:
        with pytest.raises(ClusterUnreachable, match="cluster 'hung' did not answer get") as raised:
            effects.check("hung", WEB, Role.ACTIVE)
    finally:
        effects.close()
    assert time.monotonic() - started < 2.0  # read timeouts are retried, within the budget
    assert "ReadTimeoutError" in raised.value.message and "attempts in" in raised.value.message
    assert clients.retries["ReadTimeoutError"] >= 1


def test_a_cluster_without_kubeconfig_context_is_permanent(effects: KubeEffects) -> None:
    with pytest.raises(PermanentError, match="no usable connection settings for cluster 'site-z'") as raised:
        effects.observe("site-z", WEB)
    assert (raised.value.cluster, raised.value.obj) == ("site-z", "Deployment shop/web")


def test_in_cluster_uses_the_service_account(effects: KubeEffects, monkeypatch: pytest.MonkeyPatch) -> None:
    # Outside a pod there is none: the in-cluster loader (not kubeconfig) says so.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PermanentError, match=r"cluster 'in-cluster'.*Service host/port is not set"):
        effects.observe("in-cluster", WEB)


def test_one_client_per_cluster_across_threads(clients: KubeClients) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(clients.api_client, ["site-a", "site-b"] * 8))
    assert len({id(api) for api in made}) == 2
    assert made[0] is clients.api_client("site-a")
    assert made[0].configuration.retries is False


def _serve_only_v1beta1(cluster: SandboxCluster) -> None:
    crd = cluster.store.get("customresourcedefinitions", None, "virtualservices.networking.istio.io")
    crd["spec"]["versions"] = [
        {**v, "storage": True} for v in crd["spec"]["versions"] if v["name"] == "v1beta1"
    ]
    cluster.store.update("customresourcedefinitions", None, crd["metadata"]["name"], crd)


def test_virtual_services_fall_back_to_v1beta1(effects: KubeEffects, site_b: SandboxCluster) -> None:
    _serve_only_v1beta1(site_b)
    vs = ref("VirtualService", "web")
    assert effects.target("site-b", vs).version == "v1beta1"
    assert effects.target("site-a", vs).version == "v1"
    change = effects.make_active("site-b", vs, epoch=2)
    assert change.changed
    assert stored(site_b, vs)["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/controller"] == (
        "dns-controller"
    )
    assert effects.check("site-b", vs, Role.ACTIVE).reached


def test_a_stale_discovery_cache_is_refreshed(effects: KubeEffects, site_b: SandboxCluster) -> None:
    vs = ref("VirtualService", "web")
    assert effects.check("site-b", vs, Role.PASSIVE).reached  # discovery cached: v1
    _serve_only_v1beta1(site_b)
    assert effects.make_active("site-b", vs, epoch=2).changed
    assert effects.target("site-b", vs).version == "v1beta1"


def test_no_istio_at_all_is_permanent(effects: KubeEffects, site_b: SandboxCluster) -> None:
    site_b.store.delete("customresourcedefinitions", None, "virtualservices.networking.istio.io")
    with pytest.raises(PermanentError) as raised:
        effects.make_active("site-b", ref("VirtualService", "web"), epoch=2)
    assert "neither networking.istio.io/v1 nor networking.istio.io/v1beta1 is" in raised.value.message


def test_every_error_says_where(effects: KubeEffects, site_a: SandboxCluster) -> None:
    odd = ref("ConfigMap", "settings")
    with pytest.raises(OrchestratorError) as raised:
        effects.make_passive("site-a", odd, epoch=1)
    assert (raised.value.cluster, raised.value.obj) == ("site-a", "ConfigMap shop/settings")
    assert isinstance(raised.value, PermanentError)
