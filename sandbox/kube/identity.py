"""Who is calling: bearer tokens mapped to users, the way a real API server's token authenticator does.

Each cluster has a :class:`Users` table. These identities always exist, one per component of
deploy/rbac: the orchestrator's worker ServiceAccount (the token in the kubeconfig the cluster writes,
so the product acts as itself), the watcher's and the health checker's ServiceAccounts, an operator
(a person in the group that deploy/rbac binds to the ``failover-orchestrator-operator`` ClusterRole,
what ``failoverctl`` runs as) and a cluster admin (``kubernetes-admin`` in ``system:masters``). Tests
add more with :meth:`Users.add`. The authenticated :class:`UserInfo` travels with the request
(:class:`RequestContext`) to the RBAC authorizer (rbac.py) and admission. This module only
authenticates; it must not authorize or touch objects.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

WORKER = "worker"
ADMIN = "admin"
WORKER_USERNAME = "system:serviceaccount:failover-orchestrator:failover-worker"
WORKER_GROUPS = (
    "system:serviceaccounts",
    "system:serviceaccounts:failover-orchestrator",
    "system:authenticated",
)
WATCHER = "watcher"
HEALTH_CHECKER = "health-checker"
OPERATOR = "operator"
COMPONENTS = (WORKER, WATCHER, HEALTH_CHECKER, OPERATOR)
WATCHER_USERNAME = "system:serviceaccount:failover-orchestrator:failover-watcher"
HEALTH_CHECKER_USERNAME = "system:serviceaccount:failover-orchestrator:failover-health-checker"
OPERATOR_USERNAME = "failover-operator@example.com"
OPERATOR_GROUPS = ("failover-orchestrator-operators", "system:authenticated")
USERNAMES = {
    WORKER: WORKER_USERNAME,
    WATCHER: WATCHER_USERNAME,
    HEALTH_CHECKER: HEALTH_CHECKER_USERNAME,
    OPERATOR: OPERATOR_USERNAME,
}
ADMIN_USERNAME = "kubernetes-admin"
ADMIN_GROUPS = ("system:masters", "system:authenticated")


@dataclass(frozen=True)
class UserInfo:
    """An authenticated user, as admission's ``request.userInfo`` sees it."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def as_cel(self) -> dict[str, object]:
        return {"username": self.username, "uid": self.uid, "groups": list(self.groups), "extra": {}}


ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))


@dataclass
class RequestContext:
    """Per-request state the HTTP layer hands to the API: the caller and the warnings to send back."""

    user: UserInfo
    warnings: list[str] = field(default_factory=list)


class Users:
    """Token -> user table of one cluster; thread-safe, users are added while the server runs.

    Args:
        worker_token: the worker's token; a random one if None.
        allow_anonymous: whether a request without credentials is served (as ``system:anonymous``).
            A real server allows it only with ``--anonymous-auth``; the sandbox allows it unless a
            token was configured explicitly, so plain HTTP probes in tests keep working.
    """

    def __init__(self, worker_token: str | None = None, *, allow_anonymous: bool = False) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, UserInfo] = {}
        self._by_name: dict[str, str] = {}
        self.allow_anonymous = allow_anonymous
        self.add(WORKER_USERNAME, WORKER_GROUPS, token=worker_token, alias=WORKER)
        self.add(WATCHER_USERNAME, WORKER_GROUPS, alias=WATCHER)
        self.add(HEALTH_CHECKER_USERNAME, WORKER_GROUPS, alias=HEALTH_CHECKER)
        self.add(OPERATOR_USERNAME, OPERATOR_GROUPS, alias=OPERATOR)
        self.add(ADMIN_USERNAME, ADMIN_GROUPS, alias=ADMIN)

    def add(
        self,
        username: str,
        groups: tuple[str, ...] | list[str] = ("system:authenticated",),
        *,
        token: str | None = None,
        alias: str | None = None,
    ) -> str:
        """Register a user and return its bearer token (``alias`` is a short name for :meth:`token`)."""
        token = token or secrets.token_urlsafe(24)
        with self._lock:
            self._by_token[token] = UserInfo(username, tuple(groups))
            self._by_name[username] = token
            if alias:
                self._by_name[alias] = token
        return token

    def token(self, user: str) -> str:
        """The token of ``user``: a username or an alias (``worker``, ``admin``); KeyError if unknown."""
        with self._lock:
            return self._by_name[user]

    def authenticate(self, authorization: str | None) -> UserInfo | None:
        """The user of an ``Authorization`` header; None means 401 (unknown token, or none allowed)."""
        if not authorization:
            return ANONYMOUS if self.allow_anonymous else None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._lock:
            return self._by_token.get(token.strip())
