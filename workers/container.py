"""The dependency injector: builds the adapters a worker's steps use, from settings.

``Settings.adapters`` names a ``module:function`` that takes the settings and returns
:class:`Adapters`. Production uses :func:`production_adapters` (Kubernetes and DynamoDB); tests and
the demo point it at ``sandbox`` fakes or servers, so a worker process started from the command line
can be wired to anything without the product importing the sandbox.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from fsm.run import Run
from workers.errors import PermanentError
from workers.ports import ClusterEffects, Coordination
from workers.settings import Settings


class RunObserver(Protocol):
    """Told about every committed decision (e.g. metrics). Best effort; must not do I/O that can block."""

    def observe(self, run: Run, reason: str) -> None: ...


@dataclass
class Adapters:
    effects: ClusterEffects
    coordination: Coordination
    observers: list[RunObserver] = field(default_factory=list)


AdapterFactory = Callable[[Settings], Adapters]


def load_factory(path: str) -> AdapterFactory:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise PermanentError(f"FAILOVER_ADAPTERS={path!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attribute)
    except (ImportError, AttributeError) as error:
        raise PermanentError(f"FAILOVER_ADAPTERS={path!r}: cannot load it ({error})") from error
    return cast(AdapterFactory, factory)


def build_adapters(settings: Settings) -> Adapters:
    return load_factory(settings.adapters)(settings)


def dynamo_coordination(settings: Settings) -> Coordination:
    """The Coordination port on the DynamoDB table of the settings."""
    from workers.dynamo import DynamoCoordination

    return DynamoCoordination.from_settings(settings)


def production_adapters(settings: Settings) -> Adapters:
    """Kubernetes through kubeconfig contexts (or in-cluster), DynamoDB, and the metrics observer.

    No Failover status writer: a step never waits on a status write. The watcher owns the Failover
    objects' status and Events and keeps them in line with the runs (``producers.failover_status``).
    """
    from workers.kube import KubeClients, KubeEffects
    from workers.metrics import MetricsObserver

    observers: list[RunObserver] = [MetricsObserver()]
    return Adapters(
        effects=KubeEffects(KubeClients.from_settings(settings)),
        coordination=dynamo_coordination(settings),
        observers=observers,
    )
