"""The client-side rate limit against a real (sandbox) API server: a burst is paced, nothing is lost."""

from __future__ import annotations

from sandbox.kube import SandboxFleet
from workers.kube import KubeClients, KubeEffects
from workers.kube_limits import RateLimits

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
