"""The dependency injector: builds the adapters a worker's steps use, from settings.

``Settings.adapters`` names a ``module:function`` that takes the settings and returns
:class:`Adapters`. Production uses :func:`production_adapters` (Kubernetes and DynamoDB); tests and
the demo point it at ``sandbox`` fakes or servers, so a worker process started from the command line
can be wired to anything without the product importing the sandbox.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from fsm.run import Run
from workers.errors import PermanentError
from workers.ports import ClusterEffects, Coordination
from workers.settings import Settings

if TYPE_CHECKING:
    from workers.kube import KubeEffects


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


class LazyKubeEffects:
    """:class:`workers.kube.KubeEffects` on the settings' clusters, built (and the Kubernetes client
    imported) on first use.

    Why: a worker's main process builds an engine for its heartbeats and sweeps, which never act on a
    cluster; importing the Kubernetes client there cost 9 MiB of resident memory for nothing (see
    ``tests/benchmarks/bench_rss.py``). A pool process builds it with its first step, as before. Every
    attribute (``observe_many``, ``clients``, ``close``...) is the built adapter's.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._built: KubeEffects | None = None
        self._lock = threading.Lock()

    def effects(self) -> KubeEffects:
        with self._lock:
            if self._built is None:
                from workers.kube import KubeClients, KubeEffects

                self._built = KubeEffects(KubeClients.from_settings(self._settings))
            return self._built

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # dunders probed by copy or pickle, or this object before __init__
            raise AttributeError(name)
        return getattr(self.effects(), name)

    def close(self) -> None:
        """Close the adapter if it was built (closing never builds it)."""
        with self._lock:
            built, self._built = self._built, None
        if built is not None:
            built.close()


def production_adapters(settings: Settings) -> Adapters:
    """Kubernetes through kubeconfig contexts (or in-cluster), DynamoDB, and the metrics observer.

    No Failover status writer: a step never waits on a status write. The watcher owns the Failover
    objects' status and Events and keeps them in line with the runs (``producers.failover_status``).
    The Kubernetes adapter is built on first use (:class:`LazyKubeEffects`).
    """
    from workers.metrics import MetricsObserver

    observers: list[RunObserver] = [MetricsObserver()]
    return Adapters(
        effects=LazyKubeEffects(settings),
        coordination=dynamo_coordination(settings),
        observers=observers,
    )
