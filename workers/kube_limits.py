"""Client-side rate limits per cluster: a token bucket per API server, as client-go's ``QPS``/``Burst``.

Every attempt of a Kubernetes request (:meth:`workers.kube_client.KubeClients.send`, retries included)
takes one token from its cluster's bucket first. The bucket holds at most ``burst`` tokens and refills
at ``qps`` tokens per second; a request that finds it empty waits until its token has been refilled.
So a whole site failing over at once (1,000 groups, a dozen requests each) reaches each API server at
``qps`` requests per second on average from each worker process, in bursts of at most ``burst``,
instead of all at once. ``qps <= 0`` turns the limit off.

The defaults (``FAILOVER_KUBE_QPS=200``, ``FAILOVER_KUBE_BURST=400``, per cluster and worker process)
are above client-go's (5/10 for controllers, 50/100 in newer clients) on purpose: a whole site's
failover is ~36,000 requests per surviving cluster at today's ~73 per group, the product aims at two
minutes for it (300 requests/s per cluster), and its steps come in bursts (every run validates at
once). Measured with tests/benchmarks/bench_site.py (100 groups, one worker): 48.9 s with no limit,
65.9 s at 100/s (2,268 requests waited): lower limits make the limiter, not the API server, the
bottleneck. An API server serves 400 concurrent reads and 200 writes by default and protects itself
with Priority and Fairness; the limit is there so that many workers cannot flood it.

Waiting is by reservation (like Go's ``rate.Limiter.Wait``): under the lock a caller takes its token
even when that drives the bucket below zero, computes how long until the token exists, releases the
lock and sleeps that long. Callers are served in arrival order, nobody spins, and the lock is never
held while sleeping. The clock and the sleep are injected, so tests run on a fake clock.

Why our own twenty lines and not a library: ``pyrate-limiter`` counts requests in fixed windows
(``Rate(50, Duration.SECOND)``) and raises or retries by polling when a window is full, which paces
less smoothly than a token bucket, offers no reservation and no reading of the time waited; the
bucket itself is the whole algorithm and its tests pin it down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["RateLimits", "TokenBucket"]


class TokenBucket:
    """``burst`` tokens at most, refilled at ``qps`` per second; :meth:`take` waits for one."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps > 0 and burst < 1:
            raise ValueError(f"burst must be at least 1 when qps is set, not {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._stamp = clock()

    def reserve(self) -> float:
        """Take one token now (possibly on credit); the seconds until it is really there (0: none)."""
        if self.qps <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def take(self) -> float:
        """Wait for one token; the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


class RateLimits:
    """One :class:`TokenBucket` per cluster (made on first use), and the seconds each has waited.

    ``on_wait(cluster, seconds)`` is called after every wait (the Prometheus counter in production).
    """

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        on_wait: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.qps = qps
        self.burst = burst
        self._on_wait = on_wait
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        # Per cluster: requests that had to wait, and the seconds they waited in all.
        self.waits: dict[str, int] = {}
        self.waited: dict[str, float] = {}

    def bucket(self, cluster: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(cluster)
            if bucket is None:
                bucket = self._buckets[cluster] = TokenBucket(
                    self.qps, self.burst, clock=self._clock, sleep=self._sleep
                )
            return bucket

    def take(self, cluster: str) -> float:
        """Wait for ``cluster``'s next token; the seconds waited (recorded when > 0)."""
        waited = self.bucket(cluster).take()
        if waited > 0:
            with self._lock:
                self.waits[cluster] = self.waits.get(cluster, 0) + 1
                self.waited[cluster] = self.waited.get(cluster, 0.0) + waited
            if self._on_wait is not None:
                self._on_wait(cluster, waited)
        return waited
