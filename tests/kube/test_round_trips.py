"""Round trips against a real (sandbox) API server: the client-side rate limit paces a burst and
loses nothing; validate's reads go out in parallel, one per kind, and see what one-by-one reads see."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes.config.kube_config import KubeConfigLoader

from sandbox.kube import SandboxFleet
from workers.errors import ClusterUnreachable
from workers.kube import KubeClients, KubeEffects
from workers.kube_client import refresh_at_most_every
from workers.kube_limits import RateLimits
from workers.ports import observe_all

from .conftest import NAMESPACE, ref


def test_a_burst_past_the_limit_waits_and_every_request_reaches_the_server(fleet: SandboxFleet) -> None:
    site_a = fleet["site-a"]
    limits = RateLimits(20, 2)  # past 2 at once, one request per 50 ms
    clients = KubeClients(fleet.kubeconfig_path, connect_timeout=1.0, read_timeout=3.0, limits=limits)
    try:
        effects = KubeEffects(clients)
        target = effects.target("site-a", ref("Deployment", "web"))
        before = site_a.used("worker").total()
        for _ in range(12):
            assert clients.get(target)["metadata"]["namespace"] == NAMESPACE
        seen = site_a.used("worker").total() - before
    finally:
        clients.close()
    assert seen == 12  # every request reached the server, none was dropped by the limiter
    # Past the burst, requests waited for their tokens (unless each took 50 ms on its own anyway).
    assert limits.waits["site-a"] > 0
    assert limits.waited["site-a"] > 0
    assert "site-b" not in limits.waits  # a cluster nobody talked to has not waited


# --- validate's reads in parallel (KubeEffects.observe_many) -------------------------------------------

SAMPLE = [
    ref("StatefulSet", "db"),
    ref("StatefulSet", "cache"),
    ref("Deployment", "web"),
    ref("CronJob", "report"),
    ref("VolumeReplication", "db-data"),
    ref("HelmRelease", "shop"),
    ref("Deployment", "missing"),
]


def test_observe_many_sees_what_observe_sees_one_by_one(fleet: SandboxFleet, effects: KubeEffects) -> None:
    site_a = fleet["site-a"]
    before = site_a.used("worker")
    together = observe_all(effects, "site-a", SAMPLE)
    sent = site_a.used("worker") - before
    one_by_one = {r: effects.observe("site-a", r) for r in SAMPLE}
    assert list(together) == SAMPLE
    assert together == one_by_one
    assert not together[ref("Deployment", "missing")].exists
    # One request per kind: a LIST where two objects share it (the missing Deployment included), in
    # parallel; a GET for the others.
    assert sorted((u.verb, u.resource, n) for u, n in sent.items()) == [
        ("get", "cronjobs", 1),
        ("get", "helmreleases", 1),
        ("get", "volumereplications", 1),
        ("list", "deployments", 1),
        ("list", "statefulsets", 1),
    ]


def test_observe_many_raises_the_first_error_of_an_unreachable_cluster(
    fleet: SandboxFleet, effects: KubeEffects
) -> None:
    fleet["site-b"].set_down(True)
    try:
        with pytest.raises(ClusterUnreachable) as caught:
            observe_all(effects, "site-b", SAMPLE)
    finally:
        fleet["site-b"].set_down(False)
    assert (caught.value.cluster, caught.value.obj) == ("site-b", str(SAMPLE[0]))  # in the order of refs
    assert observe_all(effects, "site-b", SAMPLE[:2])[SAMPLE[0]].exists  # the pool is still usable


# --- the credentials hook ---------------------------------------------------------------------------


def test_the_kubeconfig_is_reapplied_once_per_interval_not_before_every_request(
    fleet: SandboxFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's credentials hook re-applies the whole kubeconfig (and re-reads the proxy
    environment) before each request; the adapter lets it run once per CREDENTIALS_CHECK_SECONDS."""
    applied: list[str] = []
    original = KubeConfigLoader._set_config

    def counting(self: KubeConfigLoader, configuration: object) -> None:
        applied.append("set")
        original(self, configuration)

    monkeypatch.setattr(KubeConfigLoader, "_set_config", counting)
    clients = KubeClients(fleet.kubeconfig_path, connect_timeout=1.0, read_timeout=3.0)
    try:
        target = KubeEffects(clients).target("site-a", ref("Deployment", "web"))
        before = fleet["site-a"].used("worker").total()
        for _ in range(20):
            assert clients.get(target)["metadata"]["name"] == "web"
        seen = fleet["site-a"].used("worker").total() - before
    finally:
        clients.close()
    assert seen == 20  # every request authenticated as the worker identity
    assert applied == ["set", "set"]  # when the client was built, and at its first request only


def test_the_credentials_hook_runs_again_once_the_interval_has_passed() -> None:
    class Configuration:
        def __init__(self) -> None:
            self.refresh_api_key_hook: Callable[[object], None] | None = calls.append

    calls: list[object] = []
    now = [100.0]
    configuration = Configuration()
    refresh_at_most_every(configuration, 10.0, clock=lambda: now[0])
    hook = configuration.refresh_api_key_hook
    assert hook is not None

    for step in (0.0, 1.0, 9.9, 10.0, 15.0, 20.1):
        now[0] = 100.0 + step
        hook(configuration)

    assert len(calls) == 3  # at 0, at 10.0 and at 20.1
