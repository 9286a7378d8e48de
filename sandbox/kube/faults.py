"""Fault knobs of one sandbox cluster, settable at run time from Python.

* ``latency``: seconds added before every request is handled.
* ``error_rate`` with ``error_codes``: that fraction of API requests fails with one of 500/503/429
  (429 carries ``Retry-After: retry_after``); ``fail_next(n, code)`` fails exactly the next ``n``.
* ``timeout_rate``: that fraction is held unanswered for ``hold`` seconds (set it above the client's
  read timeout), then the connection is cut; nothing is applied. Held threads are released at once
  when the server stops or goes down.
* ``reset_rate``: that fraction gets its connection reset (TCP RST) without an answer; nothing is
  applied. ``drop_next(n, "timeout"|"reset")`` does either to exactly the next ``n``.
* ``scope(("patch", "volumereplications"), ...)``: the rates above apply only to these (verb,
  resource) pairs (names as for ``forbid``, ``"*"`` for any); ``scope()`` for every request again.
* ``seed``/``reseed``: every draw comes from one ``random.Random``, so a seeded run repeats its faults
  for the same sequence of requests. ``injected`` counts what was injected (``"503"``, ``"timeout"``).
* ``conflict_next(n)``: the next ``n`` updates or patches of existing objects get 409 Conflict.
* ``forbid(verb, resource)``: 403 Forbidden with the RBAC authorizer's message for that verb on that
  resource (``"patch", "deployments"``, ``"update", "deployments/scale"``, ``"*"`` for any).
* The "down" switch lives on the cluster (``SandboxCluster.set_down``) because it closes sockets.

Faults apply to resource requests (not discovery or /version), so kubectl still finds the kinds and the
failure lands on the call under test. This module decides; it must not write responses itself.
"""

from __future__ import annotations

import collections
import random
import threading
from dataclasses import dataclass, field

from sandbox.kube.errors import ApiError, conflict, forbidden, server_error

WRITE_VERBS = ("update", "patch")
TIMEOUT, RESET = "timeout", "reset"


class Dropped(Exception):
    """The server must not answer this request: hold it ``hold`` seconds (a timeout; 0 for a reset)
    and then cut the connection. Raised by :meth:`FaultKnobs.check`; the HTTP layer carries it out."""

    def __init__(self, how: str, hold: float) -> None:
        super().__init__(f"{how} injected")
        self.how = how
        self.hold = hold


@dataclass
class FaultKnobs:
    """Mutable fault settings; every field may be changed while the server runs."""

    latency: float = 0.0
    error_rate: float = 0.0
    error_codes: tuple[int, ...] = (500, 503, 429)
    retry_after: int = 1
    timeout_rate: float = 0.0
    reset_rate: float = 0.0
    hold: float = 3.0
    user: str = "sandbox-user"
    seed: int | None = None
    injected: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _forced_errors: list[int | str] = field(default_factory=list, repr=False)
    _scope: frozenset[tuple[str, str]] = field(default=frozenset(), repr=False)
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

    def drop_next(self, count: int, how: str = TIMEOUT) -> None:
        """Hold (``"timeout"``) or reset (``"reset"``) the next ``count`` resource requests."""
        if how not in (TIMEOUT, RESET):
            raise ValueError(f"how must be {TIMEOUT!r} or {RESET!r}, not {how!r}")
        with self._lock:
            self._forced_errors.extend([how] * count)

    def scope(self, *pairs: tuple[str, str]) -> None:
        """Apply the fault rates only to these (verb, resource) pairs; none: to every request."""
        with self._lock:
            self._scope = frozenset(pairs)

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
            self.timeout_rate = 0.0
            self.reset_rate = 0.0
            self._scope = frozenset()
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
        """Raise the injected :class:`ApiError` for this request, or :class:`Dropped` when it must not
        be answered, if any (called before handling)."""
        resource = f"{plural}/{subresource}" if subresource else plural
        with self._lock:
            candidates = {resource, f"{plural}.{group}" if group else plural, "*"}
            if subresource:
                candidates.add(f"{plural}.{group}/{subresource}" if group else resource)
            if any((v, r) in self._forbidden for v in (verb, "*") for r in candidates):
                raise forbidden(self.user, verb, resource, group, namespace=namespace, name=name)
            if self._forced_errors:
                self._inject(self._forced_errors.pop(0))
            in_scope = not self._scope or any((v, r) in self._scope for v in (verb, "*") for r in candidates)
            rates = (self.error_rate, self.timeout_rate, self.reset_rate)
            if in_scope and any(rate > 0 for rate in rates):
                draw = self._random.random()
                if draw < self.error_rate:
                    self._inject(self._random.choice(self.error_codes))
                elif draw < self.error_rate + self.timeout_rate:
                    self._inject(TIMEOUT)
                elif draw < sum(rates):
                    self._inject(RESET)
            if verb in WRITE_VERBS and name and self._conflicts > 0:
                self._conflicts -= 1
                raise conflict(plural, group, name)

    def _inject(self, fault: int | str) -> None:
        self.injected[str(fault)] += 1
        if fault == TIMEOUT:
            raise Dropped(TIMEOUT, self.hold)
        if fault == RESET:
            raise Dropped(RESET, 0.0)
        raise server_error(int(fault), self.retry_after)

    @property
    def pending_conflicts(self) -> int:
        with self._lock:
            return self._conflicts


__all__ = ["RESET", "TIMEOUT", "ApiError", "Dropped", "FaultKnobs"]
