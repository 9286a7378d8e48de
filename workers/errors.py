"""The orchestrator's own error hierarchy: what every adapter translates SDK errors into.

Two kinds of failure matter to the engine (Kopf's TemporaryError/PermanentError):
- :class:`TemporaryError`: try the same step again after a delay (``retry_after`` when the server said
  so, e.g. a 429's ``Retry-After``); the engine gives up after the step's retry budget.
- :class:`PermanentError`: retrying cannot help; the run fails (and compensates), naming the step,
  the cluster, the object and the cause.

Adapters raise these with ``raise ... from sdk_error`` so the original stays in the traceback. Nothing
here does I/O.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class. ``cluster`` and ``obj`` say where, when known, for the run's failure message."""

    def __init__(self, message: str, *, cluster: str | None = None, obj: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cluster = cluster
        self.obj = obj

    def describe(self) -> str:
        """One line: what failed, on which object and cluster."""
        where = []
        if self.obj:
            where.append(self.obj)
        if self.cluster:
            where.append(f"on cluster {self.cluster!r}")
        prefix = " ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class TemporaryError(OrchestratorError):
    """Worth retrying: throttling, 5xx, timeouts, a conflict that a re-read can resolve."""

    def __init__(
        self,
        message: str,
        *,
        cluster: str | None = None,
        obj: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, cluster=cluster, obj=obj)
        self.retry_after = retry_after


class PermanentError(OrchestratorError):
    """Retrying cannot help: a missing object, missing RBAC, a lost lease, invalid input."""


class ConflictError(TemporaryError):
    """HTTP 409 or a failed compare-and-set: re-read and try again."""


class ClusterUnreachable(TemporaryError):
    """The cluster's API server did not answer (refused, reset, timed out)."""


class NotFoundError(PermanentError):
    """A referenced object does not exist on the cluster."""


class ForbiddenError(PermanentError):
    """RBAC refused a verb on a resource; ``message`` names both."""


class LockHeld(PermanentError):
    """Another run holds the group's lock; ``holder`` and ``expires_at`` say who and until when."""

    def __init__(self, message: str, *, holder: str, expires_at: float) -> None:
        super().__init__(message)
        self.holder = holder
        self.expires_at = expires_at


class LeaseLost(PermanentError):
    """This run's lock lease expired or was taken over: its fencing token is no longer current."""


class Fenced(PermanentError):
    """A cluster refused a write because a newer run raised the group's fence (or wrote the object
    with a higher epoch): this run no longer owns the group. Never retried, nothing undone."""


class CoordinationConflict(PermanentError):
    """A conditional write in the coordination store failed; ``message`` names the condition."""


class AlreadyOwned(CoordinationConflict):
    """A group was to be adopted, but an owner is recorded already; ``owner`` names it."""

    def __init__(self, message: str, *, owner: str | None) -> None:
        super().__init__(message)
        self.owner = owner
