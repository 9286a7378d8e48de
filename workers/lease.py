"""The lease guard: a step confirms that its lease still holds before each write it makes.

Defence in depth behind the clusters' own fencing (``deploy/fencing``): the engine renews the group's
lease when a step starts, and the guard measures from that moment on the *monotonic* clock (a wall
clock can jump). Before every write the step calls :meth:`LeaseGuard.check`: once half the lease has
passed it renews again (so a long step keeps its lease), and when less than the safety margin is left
it refuses to write at all. A writer that is paused *between* this check and its write is stopped by
the API server's admission policy instead; the guard makes that window as small as a single request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fsm.models import GroupKey
from workers.errors import LeaseLost, TemporaryError
from workers.ports import Coordination


@dataclass
class LeaseGuard:
    coordination: Coordination
    group: GroupKey
    token: int
    lease_seconds: float
    margin: float
    confirmed_at: float
    monotonic: Callable[[], float] = field(default=time.monotonic)
    wall: Callable[[], float] = field(default=time.time)
    renewals: int = 0
    expires_at: float | None = None  # the expiry written by this guard's latest renewal (None: none)
    # Whether this step has confirmed the lease in DynamoDB yet: a step's first write waits for one.
    confirmed: bool = True

    @classmethod
    def renewed_if_half_gone(
        cls,
        coordination: Coordination,
        group: GroupKey,
        *,
        token: int,
        lease_seconds: float,
        margin: float,
        expires_at: float | None = None,
        wall: Callable[[], float] = time.time,
    ) -> LeaseGuard:
        """A guard for a lease last known to expire at ``expires_at`` (the run's record of its latest
        renewal, in ``wall``'s clock, the engine's): renewed now only when half of it or more has
        gone, or when the expiry is unknown (None: also how a caller asks for a renewal now), and
        then guarded from the moment the renewal was sent (the conservative end); otherwise at the
        step's first write (:meth:`check`), so that a step that only reads (a wait, ``validate``)
        makes no DynamoDB call, while no cluster is ever written without the lease confirmed in that
        very step (a lock taken from the run by hand, or DynamoDB unreachable, stops the write). A
        clock skew between the workers of a site shifts the estimate by that skew, which the safety
        margin absorbs."""
        margin = min(margin, lease_seconds / 4)
        left = None if expires_at is None else expires_at - wall()
        if left is None or left <= lease_seconds / 2:
            guard = cls(
                coordination,
                group,
                token,
                lease_seconds,
                margin,
                time.monotonic(),
                wall=wall,
                confirmed=False,
            )
            guard._confirm()
            return guard
        confirmed = time.monotonic() - (lease_seconds - min(left, lease_seconds))
        return cls(coordination, group, token, lease_seconds, margin, confirmed, wall=wall, confirmed=False)

    def _confirm(self) -> None:
        sent = self.monotonic()
        try:
            self.expires_at = self.coordination.renew_lease(
                self.group, token=self.token, lease_seconds=self.lease_seconds, now=self.wall()
            )
        except TemporaryError as error:
            raise TemporaryError(
                f"lease of group {self.group} (token {self.token}) cannot be confirmed: not writing "
                f"({error.describe()})"
            ) from error
        self.confirmed, self.confirmed_at = True, sent
        self.renewals += 1

    def left(self) -> float:
        """Seconds of lease left by this process's reckoning."""
        return self.lease_seconds - (self.monotonic() - self.confirmed_at)

    def check(self) -> None:
        """Raise instead of letting a write go out on a lease that may have run out, or that this step
        has not confirmed yet and cannot (DynamoDB unreachable, the lock taken)."""
        if not self.confirmed:
            self._confirm()
        if self.left() <= self.lease_seconds / 2:
            sent = self.monotonic()
            try:
                self.expires_at = self.coordination.renew_lease(
                    self.group, token=self.token, lease_seconds=self.lease_seconds, now=self.wall()
                )
            except TemporaryError as error:
                if self.left() < self.margin:
                    raise TemporaryError(
                        f"lease of group {self.group} (token {self.token}) cannot be confirmed and has "
                        f"{max(0.0, self.left()):.1f}s left: not writing ({error.describe()})"
                    ) from error
            else:
                self.confirmed_at = sent
                self.renewals += 1
        if self.left() < self.margin:
            raise LeaseLost(
                f"lease of group {self.group} (token {self.token}) has {max(0.0, self.left()):.1f}s left, "
                f"under the safety margin of {self.margin:g}s: not writing"
            )
