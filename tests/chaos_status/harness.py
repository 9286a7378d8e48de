"""Counting and failing requests on sandbox clusters from the test process (no sandbox change needed).

:class:`RequestTap` wraps a cluster's ``faults.check`` (called once per resource request, before it is
handled): it counts requests by verb and resource and fails a fraction of the Failover status writes
with a 503. Works on the current tree and on older ones, so the measurement script can compare.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

from sandbox.kube.errors import server_error


class RequestTap:
    def __init__(self, cluster: Any, *, status_failure_rate: float = 0.0, seed: int = 7) -> None:
        self.faults = cluster.faults
        self.inner = self.faults.check
        self.rate = status_failure_rate
        self.counts: Counter[tuple[str, str]] = Counter()
        self.failed_status_writes = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.faults.check = self  # an instance attribute: the API server calls it for every request

    def __call__(self, verb: str, plural: str, group: str, **where: Any) -> None:
        subresource = where.get("subresource")
        resource = f"{plural}/{subresource}" if subresource else plural
        with self._lock:
            self.counts[(verb, resource)] += 1
            fail = verb == "patch" and resource == "failovers/status" and self._random.random() < self.rate
            if fail:
                self.failed_status_writes += 1
        if fail:
            raise server_error(503, 1)
        self.inner(verb, plural, group, **where)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def close(self) -> None:
        self.faults.check = self.inner

    def status_requests(self) -> int:
        """Requests on Failovers and Events (the status writer's, wherever it runs)."""
        return sum(
            n
            for (_verb, resource), n in self.counts.items()
            if resource.split("/")[0] in ("failovers", "events")
        )

    def total(self) -> int:
        return sum(self.counts.values())
