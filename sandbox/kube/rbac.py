"""RBAC authorization: every resource request is checked against the cluster's Roles and bindings.

The rules are ordinary objects in the store (``rbac.authorization.k8s.io/v1`` Role, ClusterRole,
RoleBinding, ClusterRoleBinding), so a sandbox cluster enforces exactly the files of deploy/rbac it was
given, like a real API server's RBAC authorizer (plugin/pkg/auth/authorizer/rbac). Semantics kept:

- a request is allowed when any rule of any role bound to the user allows it; nothing denies;
- a ClusterRoleBinding grants its ClusterRole's rules in every namespace and at the cluster scope; a
  RoleBinding grants its Role's (same namespace) or ClusterRole's rules in its own namespace only;
- subjects: ``User`` by name, ``Group`` by the user's groups, ``ServiceAccount`` by
  ``system:serviceaccount:<namespace>:<name>`` (a RoleBinding's subject namespace defaults to its own);
- a rule matches on ``verbs``, ``apiGroups``, ``resources`` (``x`` and ``x/status`` are different
  resources, ``*`` and ``*/status`` match all) and ``resourceNames`` (a request with no name, such as
  list or create, never matches a rule that names objects); ``*`` matches anything where it is allowed;
- the group ``system:masters`` is allowed everything without any binding (the real superuser group);
- a denial is a 403 with the authorizer's message (``errors.forbidden``).

Not implemented: aggregationRule, nonResourceURLs (discovery and /version are served to every
authenticated user), impersonation. The authorizer also records, per username, every request it
allowed (verb, group, resource, namespace), so tests can compare what a component used with what its
role grants. Every request is authorized, but the rules bound to an identity (per namespace) and the
decisions are cached until a Role, ClusterRole or binding changes (``ObjectStore.kinds_version``),
so a request costs a dictionary lookup, not a scan of every binding. This module only authorizes and
records; it must not change objects.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sandbox.kube import errors
from sandbox.kube.identity import UserInfo

Body = dict[str, Any]
SUPERUSER_GROUP = "system:masters"
_KEYS = {
    kind: f"{plural}.rbac.authorization.k8s.io"
    for kind, plural in (
        ("Role", "roles"),
        ("ClusterRole", "clusterroles"),
        ("RoleBinding", "rolebindings"),
        ("ClusterRoleBinding", "clusterrolebindings"),
    )
}


@dataclass(frozen=True)
class Request:
    """One resource request as the authorizer sees it (``resource`` without the subresource)."""

    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Use:
    """One (verb, group, resource[/sub]) an identity was allowed, and where (``""``: cluster scope)."""

    verb: str
    group: str
    resource: str
    namespace: str


def _subject_matches(subject: Body, user: UserInfo, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.username)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.username == f"system:serviceaccount:{namespace}:{name}"
    return False


def _rule_allows(rule: Body, request: Request) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and request.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and request.group not in groups:
        return False
    resources = rule.get("resources") or []
    wanted = request.full_resource
    sub_wildcard = f"*/{request.subresource}" if request.subresource else "*"
    if "*" not in resources and wanted not in resources and sub_wildcard not in resources:
        return False
    names = rule.get("resourceNames") or []
    return not names or (request.name is not None and request.name in names)


class Authorizer:
    """Authorizes requests against the RBAC objects of ``store`` (an ObjectStore) and records uses."""

    def __init__(self, store: Any, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self._lock = threading.Lock()
        self._used: dict[str, Counter[Use]] = {}
        self._cache_version: tuple[int, ...] | None = None
        self._rules: dict[tuple[str, frozenset[str], str], list[Body]] = {}
        self._decisions: dict[tuple[str, frozenset[str], Request], bool] = {}

    def _version(self) -> tuple[int, ...]:
        version: tuple[int, ...] = self.store.kinds_version(*_KEYS.values())
        with self._lock:
            if version != self._cache_version:
                self._cache_version = version
                self._rules.clear()
                self._decisions.clear()
        return version

    def _bound_rules(self, user: UserInfo, namespace: str, version: tuple[int, ...]) -> list[Body]:
        """Every rule bound to ``user`` at the cluster scope (``""``) or in ``namespace``."""
        key = (user.username, frozenset(user.groups), namespace)
        cached = self._rules.get(key)
        if cached is not None:
            return cached
        rules: list[Body] = []
        if not namespace:
            for binding in self._objects("ClusterRoleBinding"):
                if any(_subject_matches(s, user, "") for s in binding.get("subjects") or []):
                    rules += self._role_rules(binding.get("roleRef") or {}, None)
        else:
            for binding in self._objects("RoleBinding", namespace):
                if any(_subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
                    rules += self._role_rules(binding.get("roleRef") or {}, namespace)
        with self._lock:
            if self._cache_version == version:  # not computed from RBAC objects since replaced
                self._rules[key] = rules
        return rules

    def _objects(self, kind: str, namespace: str | None = None) -> list[Body]:
        resource = self.store.registry.by_key(_KEYS[kind])
        if resource is None:
            return []
        items: list[Body] = self.store.list(resource, namespace)[0]
        return items

    def _role_rules(self, ref: Body, namespace: str | None) -> list[Body]:
        kind, name = ref.get("kind"), ref.get("name")
        if kind not in ("ClusterRole", "Role") or (kind == "Role" and not namespace) or not name:
            return []
        resource = self.store.registry.by_key(_KEYS[kind])
        if resource is None:
            return []
        role = self.store.find(resource, namespace if kind == "Role" else None, name)
        return list(role.get("rules") or []) if role is not None else []

    def allows(self, user: UserInfo, request: Request) -> bool:
        """Whether ``user`` may make ``request`` (RBAC semantics, see the module docstring)."""
        if not self.enabled or SUPERUSER_GROUP in user.groups:
            return True
        version = self._version()
        key = (user.username, frozenset(user.groups), request)
        decision = self._decisions.get(key)
        if decision is None:
            rules = self._bound_rules(user, "", version)
            if request.namespace:
                rules = rules + self._bound_rules(user, request.namespace, version)
            decision = any(_rule_allows(rule, request) for rule in rules)
            with self._lock:
                if self._cache_version == version:  # not computed from RBAC objects since replaced
                    if len(self._decisions) > 100_000:
                        self._decisions.clear()
                    self._decisions[key] = decision
        return decision

    def authorize(self, user: UserInfo, request: Request) -> None:
        """Return if allowed (and record the use); raise the 403 the real authorizer sends if not."""
        if not self.allows(user, request):
            raise errors.forbidden(
                user.username,
                request.verb,
                request.full_resource,
                request.group,
                namespace=request.namespace,
                name=request.name,
            )
        use = Use(request.verb, request.group, request.full_resource, request.namespace or "")
        with self._lock:
            self._used.setdefault(user.username, Counter())[use] += 1

    def used(self, username: str) -> Counter[Use]:
        """Every request ``username`` was allowed since the cluster started (or :meth:`reset`)."""
        with self._lock:
            return Counter(self._used.get(username, Counter()))

    def reset(self) -> None:
        with self._lock:
            self._used.clear()
