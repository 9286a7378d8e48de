"""The worker processes' adapters in these scenarios: the production ones minus the status writer.

``FAILOVER_ADAPTERS=tests.chaos_faults.adapters:kube_with_dynamodb``: :class:`workers.kube.KubeEffects`
on ``KubeClients.from_settings`` (kubeconfig, timeouts and retry budget from the settings) and
:class:`workers.dynamo.DynamoCoordination.from_settings` (the production client, its timeouts and
retry budget), exactly as :func:`workers.container.production_adapters` builds them.
"""

from __future__ import annotations

from workers.container import Adapters
from workers.dynamo import DynamoCoordination
from workers.kube import KubeClients, KubeEffects
from workers.settings import Settings


def kube_with_dynamodb(settings: Settings) -> Adapters:
    return Adapters(
        effects=KubeEffects(KubeClients.from_settings(settings)),
        coordination=DynamoCoordination.from_settings(settings),
    )
