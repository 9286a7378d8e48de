"""A fleet of sandbox clusters behind one kubeconfig file (one context per cluster, named after it).

``SandboxFleet(["site-a", "site-b"], kubeconfig_path=...)`` starts every cluster, writes the kubeconfig
(current context: the first cluster; its user is the worker) and one more per component of deploy/rbac
next to it (``kubeconfig.watcher``, ``kubeconfig.health-checker``, ``kubeconfig.operator``, the same
contexts, that component's token: :meth:`SandboxFleet.kubeconfig_for`), and, on exit, stops them
all and removes a kubeconfig it created in a temporary directory. With ``processes=True`` every
cluster runs in its own process (:class:`~sandbox.kube.process.ProcessCluster`), so the API servers do
not share the caller's cores; the kubeconfig files are the same, but ``cluster.store`` and
``cluster.controllers`` are not reachable (knobs: ``set_knob``). This module only composes clusters;
it must not reach into their internals.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from sandbox.kube.cluster import SandboxCluster
from sandbox.kube.identity import COMPONENTS, WORKER
from sandbox.kube.process import ProcessCluster

Cluster = SandboxCluster | ProcessCluster


def write_kubeconfig(
    clusters: Sequence[Cluster], path: Path, current: str | None = None, *, user: str = "worker"
) -> Path:
    """Write a kubeconfig for ``clusters`` to ``path``; context names are the cluster names.

    Every context acts as ``user`` (the worker ServiceAccount by default, ``admin`` for a person), so
    the same code can run as either identity by pointing it at another file.
    """
    entries = [c.kubeconfig(user, context=c.name) for c in clusters]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [e["cluster"] for e in entries],
        "users": [e["user"] for e in entries],
        "contexts": [e["context"] for e in entries],
        "current-context": current or (clusters[0].name if clusters else ""),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class SandboxFleet:
    """Several :class:`SandboxCluster` objects started together; ``fleet["site-a"]`` gets one.

    Args:
        names: cluster names, also the kubeconfig context names.
        kubeconfig_path: where to write the kubeconfig; a temporary file (removed on exit) if None.
        processes: run every cluster in its own process (:class:`ProcessCluster`).
        cluster_options: keyword arguments passed to every :class:`SandboxCluster` (with
            ``processes``, also ``sample_groups``/``passive`` of :class:`ProcessCluster`).
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        kubeconfig_path: Path | str | None = None,
        processes: bool = False,
        **cluster_options: Any,
    ) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"cluster names must be unique: {list(names)}")
        make = ProcessCluster if processes else SandboxCluster
        self.clusters: dict[str, Any] = {name: make(name, **cluster_options) for name in names}
        self._tmpdir: str | None = None
        self._kubeconfig_path = Path(kubeconfig_path) if kubeconfig_path is not None else None

    @property
    def kubeconfig_path(self) -> Path:
        """The kubeconfig file (a temporary one is only chosen when the fleet starts)."""
        if self._kubeconfig_path is None:
            raise RuntimeError("the fleet has no kubeconfig until it is started")
        return self._kubeconfig_path

    def start(self) -> SandboxFleet:
        if self._kubeconfig_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="sandbox-kube-")
            self._kubeconfig_path = Path(self._tmpdir) / "kubeconfig"
        try:
            for cluster in self.clusters.values():
                if isinstance(cluster, ProcessCluster):
                    cluster.spawn()  # all children start (and load their samples) side by side
            for cluster in self.clusters.values():
                cluster.start()
        except BaseException:
            self.stop()
            raise
        write_kubeconfig(list(self.clusters.values()), self.kubeconfig_path)
        for component in COMPONENTS:
            if component != WORKER:
                write_kubeconfig(list(self.clusters.values()), self.kubeconfig_for(component), user=component)
        return self

    def kubeconfig_for(self, component: str) -> Path:
        """The kubeconfig of ``component`` (``worker``, ``watcher``, ``health-checker``, ``operator``).

        The same contexts as :attr:`kubeconfig_path` (the worker's), acting as that component's identity.
        """
        if component == WORKER:
            return self.kubeconfig_path
        path = self.kubeconfig_path
        return path.with_name(f"{path.name}.{component}")

    def stop(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._kubeconfig_path = None

    def __enter__(self) -> SandboxFleet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __getitem__(self, name: str) -> SandboxCluster:
        return self.clusters[name]

    def __iter__(self) -> Iterator[SandboxCluster]:
        return iter(self.clusters.values())

    def __len__(self) -> int:
        return len(self.clusters)

    @property
    def names(self) -> list[str]:
        return list(self.clusters)
