"""Safety invariants of a failover, checked on the sandbox clusters' objects while a run goes on.

Independent of the adapter under test: these read the objects straight from the sandbox stores and
judge them with their own, deliberately plain rules. The orders of reads matter, since two reads are
never one instant: each check reads first what can only move forward later in the run, so that a
violation it reports really existed at one moment (every transition here is one-way during a run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from fsm.models import FailoverGroup
from sandbox.kube import SandboxCluster

Obj = dict[str, Any]
Objects = dict[tuple[str, str], Obj]
KINDS = (
    "Deployment",
    "StatefulSet",
    "CronJob",
    "VolumeReplication",
    "Ingress",
    "VirtualService",
    "HelmRelease",
)


def snapshot(cluster: SandboxCluster, namespace: str, kinds: Iterable[str] = KINDS) -> Objects:
    objects: Objects = {}
    for kind in kinds:
        items, _ = cluster.store.list(kind, namespace)
        objects.update({(kind, o["metadata"]["name"]): o for o in items})
    return objects


def _notes(obj: Obj) -> dict[str, str]:
    return obj["metadata"].get("annotations") or {}


def primary_volumes(objects: Objects) -> set[str]:
    """Volumes that are, or were asked to be, primary (either is a writer for this purpose)."""
    return {
        name
        for (kind, name), obj in objects.items()
        if kind == "VolumeReplication"
        and (
            str(obj["spec"].get("replicationState", "")).lower() == "primary"
            or str((obj.get("status") or {}).get("state", "")).lower() == "primary"
        )
    }


def promoted(obj: Obj) -> bool:
    status = obj.get("status") or {}
    return str(status.get("state", "")).lower() == "primary"


def scaled_before_volumes(workloads: Objects, volumes: Objects, group: FailoverGroup) -> list[str]:
    """Workloads asked to run while one of their volumes is not primary yet."""
    found = []
    for workload in group.spec.workloads:
        obj = workloads.get((workload.kind.value, workload.name))
        if obj is None or int(obj["spec"].get("replicas", 0)) == 0:
            continue
        for volume in workload.volume_replications:
            vr = volumes.get(("VolumeReplication", volume))
            if vr is None or not promoted(vr):
                found.append(f"{workload.kind.value} {workload.name} scaled up before {volume} was primary")
    return found


def stood_down(objects: Objects) -> list[str]:
    """Objects of the (formerly active) source that are already in a passive form."""
    found = []
    for (kind, name), obj in objects.items():
        spec = obj.get("spec") or {}
        if (
            (kind in ("Deployment", "StatefulSet") and int(spec.get("replicas", 1)) == 0)
            or (kind in ("CronJob", "HelmRelease", "Kustomization") and spec.get("suspend") is True)
            or (kind in ("Ingress", "VirtualService") and _notes(obj).get(_DNS) == "ignore")
            or (kind == "VolumeReplication" and str(spec.get("replicationState")).lower() == "secondary")
        ):
            found.append(f"{kind} {name}")
    return found


_DNS = "external-dns.alpha.kubernetes.io/controller"


def not_ready(objects: Objects) -> list[str]:
    """Target objects not serving yet: the reason a source must not stand down."""
    found = []
    for (kind, name), obj in objects.items():
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if kind in ("Deployment", "StatefulSet"):
            want = int(spec.get("replicas", 1))
            ok = want > 0 and int(status.get("readyReplicas", 0)) == want
        elif kind == "CronJob":
            ok = spec.get("suspend") is not True
        elif kind in ("Ingress", "VirtualService"):
            ok = _notes(obj).get(_DNS) == "dns-controller"
        elif kind == "VolumeReplication":
            ok = promoted(obj)
        else:
            ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
            ok = spec.get("suspend") is not True and bool(ready) and ready[0].get("status") == "True"
        if not ok:
            found.append(f"{kind} {name}")
    return found


class Sampler(threading.Thread):
    """A daemon thread that calls :meth:`sample` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, name: str, interval: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.samples = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class InvariantMonitor(Sampler):
    """Samples both clusters every few milliseconds during a run and records every violation."""

    def __init__(
        self,
        source: SandboxCluster,
        target: SandboxCluster,
        mode: str,
        group: FailoverGroup,
        *,
        interval: float = 0.005,
    ) -> None:
        super().__init__("invariant-monitor", interval)
        self.source, self.target, self.mode, self.group = source, target, mode, group
        self.namespace = group.metadata.namespace
        self.violations: list[str] = []
        self.first_stood_down: list[str] = []

    def sample(self) -> None:
        self.samples += 1
        if self.mode == "CONSISTENCY":
            # Target first: once primary there, the source must already have let go.
            target_volumes = snapshot(self.target, self.namespace, ["VolumeReplication"])
            source_volumes = snapshot(self.source, self.namespace, ["VolumeReplication"])
            for name in sorted(primary_volumes(target_volumes) & primary_volumes(source_volumes)):
                self._violation(f"VolumeReplication {name} primary on both clusters")
            # Workloads first: once scaled up, their volumes must already be primary.
            workloads = snapshot(self.target, self.namespace, ["Deployment", "StatefulSet"])
            volumes = snapshot(self.target, self.namespace, ["VolumeReplication"])
            for problem in scaled_before_volumes(workloads, volumes, self.group):
                self._violation(f"target: {problem}")
        else:
            # Source first: once anything there stands down, the target must already serve.
            down = stood_down(snapshot(self.source, self.namespace))
            if down:
                waiting = not_ready(snapshot(self.target, self.namespace))
                if not self.first_stood_down:
                    self.first_stood_down = down
                if waiting:
                    self._violation(
                        f"source stood down ({', '.join(down)}) while target not ready ({', '.join(waiting)})"
                    )

    def _violation(self, text: str) -> None:
        if text not in self.violations:
            self.violations.append(text)
