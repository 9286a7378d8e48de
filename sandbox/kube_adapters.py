"""Adapters for worker processes that act on sandbox Kubernetes clusters with the real adapter.

``FAILOVER_ADAPTERS=sandbox.kube_adapters:kube_clusters_with_fake_coordination`` gives a worker the
real :class:`workers.kube.KubeEffects` on the clusters of the kubeconfig at ``FAILOVER_KUBECONFIG``
(a :class:`sandbox.kube.SandboxFleet`'s), with :class:`sandbox.fakes.FakeCoordination` in the
worker's Redis under ``FAILOVER_FAKE_PREFIX`` standing in for DynamoDB. Workers write no Failover
status (the watcher does). Never imported by the product.
"""

from __future__ import annotations

import os

import redis

from sandbox.fakes import FakeCoordination
from workers.container import Adapters
from workers.errors import PermanentError
from workers.kube import KubeClients, KubeEffects
from workers.settings import Settings


def kube_clusters_with_fake_coordination(settings: Settings) -> Adapters:
    kubeconfig = os.environ.get("FAILOVER_KUBECONFIG")
    if not kubeconfig:
        raise PermanentError("FAILOVER_KUBECONFIG must name the sandbox fleet's kubeconfig file")
    prefix = os.environ.get("FAILOVER_FAKE_PREFIX", f"{settings.key_prefix}fake:")
    # Short timeouts: the sandbox answers in milliseconds, and a cluster switched off must fail fast.
    clients = KubeClients(kubeconfig, connect_timeout=1.0, read_timeout=5.0)
    return Adapters(
        effects=KubeEffects(clients),
        coordination=FakeCoordination(redis.Redis.from_url(settings.redis_url), prefix),
    )
