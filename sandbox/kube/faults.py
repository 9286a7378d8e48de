"""Fault knobs of one sandbox cluster, settable at run time from Python.

* ``latency``: seconds added before every request is handled.
* ``error_rate`` with ``error_codes``: that fraction of API requests fails with one of 500/503/429
  (429 carries ``Retry-After: retry_after``); ``fail_next(n, code)`` fails exactly the next ``n``.
* ``conflict_next(n)``: the next ``n`` updates or patches of existing objects get 409 Conflict.
* ``forbid(verb, resource)``: 403 Forbidden with the RBAC authorizer's message for that verb on that
  resource (``"patch", "deployments"``, ``"update", "deployments/scale"``, ``"*"`` for any).
* The "down" switch lives on the cluster (``SandboxCluster.set_down``) because it closes sockets.

Faults apply to resource requests (not discovery or /version), so kubectl still finds the kinds and the
failure lands on the call under test. This module decides; it must not write responses itself.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from sandbox.kube.errors import ApiError, conflict, forbidden, server_error

WRITE_VERBS = ("update", "patch")


@dataclass
class FaultKnobs:
    """Mutable fault settings; every field may be changed while the server runs."""

    latency: float = 0.0
    error_rate: float = 0.0
    error_codes: tuple[int, ...] = (500, 503, 429)
    retry_after: int = 1
    user: str = "sandbox-user"
    seed: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _forced_errors: list[int] = field(default_factory=list, repr=False)
    _conflicts: int = field(default=0, repr=False)
    _forbidden: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self._random.seed(self.seed)

    def reseed(self, seed: int) -> None:
        """Make the ``error_rate`` draws repeatable from here on."""
        with self._lock:
            self._random.seed(seed)

    def fail_next(self, count: int, code: int = 500) -> None:
        """Fail the next ``count`` resource requests with ``code`` (500, 503 or 429)."""
        with self._lock:
            self._forced_errors.extend([code] * count)

    def conflict_next(self, count: int) -> None:
        """Answer the next ``count`` updates/patches of existing objects with 409 Conflict."""
        with self._lock:
            self._conflicts += count

    def forbid(self, verb: str, resource: str) -> None:
        """Deny ``verb`` on ``resource`` (plural, ``plural.group`` or ``plural/subresource``)."""
        with self._lock:
            self._forbidden.add((verb, resource))

    def allow(self, verb: str, resource: str) -> None:
        with self._lock:
            self._forbidden.discard((verb, resource))

    def reset(self) -> None:
        """Clear every fault: no latency, errors, conflicts or denials."""
        with self._lock:
            self.latency = 0.0
            self.error_rate = 0.0
            self._forced_errors.clear()
            self._conflicts = 0
            self._forbidden.clear()

    def check(
        self,
        verb: str,
        plural: str,
        group: str,
        *,
        subresource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        """Raise the injected :class:`ApiError` for this request, if any (called before handling)."""
        resource = f"{plural}/{subresource}" if subresource else plural
        with self._lock:
            candidates = {resource, f"{plural}.{group}" if group else plural, "*"}
            if subresource:
                candidates.add(f"{plural}.{group}/{subresource}" if group else resource)
            if any((v, r) in self._forbidden for v in (verb, "*") for r in candidates):
                raise forbidden(self.user, verb, resource, group, namespace=namespace, name=name)
            if self._forced_errors:
                raise server_error(self._forced_errors.pop(0), self.retry_after)
            if self.error_rate > 0 and self._random.random() < self.error_rate:
                raise server_error(self._random.choice(self.error_codes), self.retry_after)
            if verb in WRITE_VERBS and name and self._conflicts > 0:
                self._conflicts -= 1
                raise conflict(plural, group, name)

    @property
    def pending_conflicts(self) -> int:
        with self._lock:
            return self._conflicts


__all__ = ["ApiError", "FaultKnobs"]
