"""The invariant monitor of the chaos tests: a thread that samples every sandbox cluster's objects
(straight from the stores, never through the product) and records each moment that breaks
"never two writers, never zero serving".

* **two primaries**: a VolumeReplication that is primary (asked for in its spec, or reported in its
  status) on two clusters at once.
* **zero serving**: no cluster serves the group, i.e. none has every Deployment and StatefulSet of the
  group scaled up and ready *and* every Ingress and VirtualService published by external-dns.

Either may be allowed for a while by a window the test declares (``with monitor.window(...)``): a
CONSISTENCY run's planned downtime (zero serving from its start to its end), an UPTIME run's planned
overlap (its target's volumes are promoted before its source's are demoted, by design of the mode).
A moment is judged only by a sample during which no window of its kind was open.

Two reads are never one instant, and the monitor does not know which way a handoff goes: each sample
reads the clusters twice, in opposite orders, and reports a moment only if both reads show it. For a
handoff whose "up" edge precedes its "down" edge (how both modes move serving, and how a volume goes
secondary before the other goes primary), one of the two orders always sees the truth, so a reported
violation really existed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sandbox.kube import SandboxCluster
from tests.kube.invariants import Objects, Sampler, primary_volumes, snapshot

TWO_PRIMARIES = "two_primaries"
ZERO_SERVING = "zero_serving"
_DNS = "external-dns.alpha.kubernetes.io/controller"
_KINDS = ("Deployment", "StatefulSet", "VolumeReplication", "Ingress", "VirtualService")


def serving(objects: Objects) -> bool:
    """Whether one cluster serves the group: workloads up and ready, DNS published."""
    workloads = [o for (kind, _), o in objects.items() if kind in ("Deployment", "StatefulSet")]
    network = [o for (kind, _), o in objects.items() if kind in ("Ingress", "VirtualService")]
    if not workloads or not network:
        return False
    for obj in workloads:
        want = int((obj.get("spec") or {}).get("replicas", 1))
        ready = int((obj.get("status") or {}).get("readyReplicas", 0))
        if want == 0 or ready != want:
            return False
    return all((o["metadata"].get("annotations") or {}).get(_DNS) == "dns-controller" for o in network)


@dataclass(frozen=True)
class Violation:
    kind: str
    text: str
    at: float

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


class FleetMonitor(Sampler):
    """Samples N clusters every ``interval`` seconds; see the module docstring."""

    def __init__(
        self, clusters: Sequence[SandboxCluster], namespace: str = "shop", *, interval: float = 0.02
    ) -> None:
        super().__init__("chaos-invariant-monitor", interval)
        self.clusters = list(clusters)
        self.namespace = namespace
        self.violations: list[Violation] = []
        # Moments seen inside a declared window (not violations; reported for the record).
        self.allowed: Counter[str] = Counter()
        self.ever_serving: set[str] = set()
        self._windows: Counter[str] = Counter()
        self._reasons: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    # --- windows ------------------------------------------------------------------------------------

    def open(self, kind: str, why: str) -> None:
        with self._lock:
            self._windows[kind] += 1
            self._reasons.setdefault(kind, []).append(why)

    def close(self, kind: str, why: str) -> None:
        with self._lock:
            self._windows[kind] -= 1
            self._reasons[kind].remove(why)

    @contextlib.contextmanager
    def window(self, kind: str, why: str) -> Iterator[None]:
        self.open(kind, why)
        try:
            yield
        finally:
            self.close(kind, why)

    def _open_kinds(self) -> set[str]:
        with self._lock:
            return {kind for kind, count in self._windows.items() if count > 0}

    # --- sampling -------------------------------------------------------------------------------------

    def __enter__(self) -> FleetMonitor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read(self, order: Sequence[SandboxCluster]) -> dict[str, Objects]:
        return {cluster.name: snapshot(cluster, self.namespace, _KINDS) for cluster in order}

    def sample(self) -> None:
        before = self._open_kinds()
        forward = self._read(self.clusters)
        backward = self._read(list(reversed(self.clusters)))
        after = self._open_kinds()
        self.samples += 1
        allowed = before | after
        both = [forward, backward]
        for read in both:
            self.ever_serving |= {name for name, objects in read.items() if serving(objects)}
        twice = [_two_primaries(read) for read in both]
        for text in sorted(set(twice[0]) & set(twice[1])):
            self._judge(TWO_PRIMARIES, text, allowed)
        if not any(serving(objects) for objects in forward.values()) and not any(
            serving(objects) for objects in backward.values()
        ):
            self._judge(ZERO_SERVING, f"none of {', '.join(forward)} serves the group", allowed)

    def _judge(self, kind: str, text: str, allowed: set[str]) -> None:
        if kind in allowed:
            self.allowed[kind] += 1
            return
        if text not in self._seen:
            self._seen.add(text)
            self.violations.append(Violation(kind, text, time.time()))

    def report(self) -> str:
        allowed = ", ".join(f"{kind} x{count}" for kind, count in sorted(self.allowed.items())) or "none"
        return (
            f"{self.samples} samples; violations: {[str(v) for v in self.violations]}; "
            f"inside declared windows: {allowed}"
        )


def _two_primaries(read: dict[str, Objects]) -> list[str]:
    where: dict[str, list[str]] = {}
    for cluster, objects in read.items():
        for name in primary_volumes(objects):
            where.setdefault(name, []).append(cluster)
    return [
        f"VolumeReplication {name} primary on {' and '.join(sorted(clusters))}"
        for name, clusters in sorted(where.items())
        if len(clusters) > 1
    ]


class SiteMonitor(Sampler):
    """Samples "never two writers" across a whole site: every namespace of two or more clusters at
    once (one list of VolumeReplications per cluster, straight from the stores) and records each
    namespace that has a primary volume (asked for or reported, :func:`primary_volumes`) on two
    clusters. For CONSISTENCY runs, where every source volume is demoted before any target volume
    is promoted, the namespace is the unit: two primaries of different volumes are two writers too.
    As :class:`FleetMonitor`, each sample reads the clusters twice in opposite orders and reports a
    namespace only if both reads show it."""

    def __init__(self, clusters: Sequence[SandboxCluster], *, interval: float = 0.02) -> None:
        super().__init__("chaos-site-monitor", interval)
        self.clusters = list(clusters)
        self.violations: list[Violation] = []

    def read(self, order: Sequence[SandboxCluster]) -> dict[str, set[str]]:
        """Namespace -> the clusters (read in ``order``) with a primary volume there."""
        where: dict[str, set[str]] = {}
        for cluster in order:
            items, _ = cluster.store.list("VolumeReplication", None)
            by_namespace: dict[str, Objects] = {}
            for obj in items:
                meta = obj["metadata"]
                by_namespace.setdefault(meta["namespace"], {})[("VolumeReplication", meta["name"])] = obj
            for namespace, objects in by_namespace.items():
                if primary_volumes(objects):
                    where.setdefault(namespace, set()).add(cluster.name)
        return where

    def sample(self) -> None:
        forward = self.read(self.clusters)
        backward = self.read(list(reversed(self.clusters)))
        self.samples += 1
        for namespace in sorted(set(forward) & set(backward)):
            if len(forward[namespace]) > 1 and len(backward[namespace]) > 1:
                on = " and ".join(sorted(forward[namespace]))
                self.violations.append(
                    Violation(TWO_PRIMARIES, f"namespace {namespace}: primary volumes on {on}", time.time())
                )
