"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): the CEL admission of a real API server.

Policies and their bindings are ordinary objects in the store; every write that arrives over HTTP
(create, update, patch, delete, dry runs too) is checked against them on its final form, after
defaults and validation, right before it would be stored: the store calls the request's admission
hook inside its lock (see :meth:`ResourceApi._admit`). Writes controllers make through the store
directly are not admitted, as a real server's internal writes of the sandbox's stand-ins would be by
their own identities: only what a client sends is checked.

Upstream semantics kept (staging/src/k8s.io/apiserver/pkg/admission/plugin/policy/validating):

- bindings select their policy by ``spec.policyName``; each (policy, binding) pair is evaluated and
  the first denial refuses the request, every ``Warn`` adds a ``Warning`` header, ``Audit`` is a no-op;
- matching: ``matchConstraints`` (resourceRules, excludeResourceRules, namespaceSelector,
  objectSelector; old *or* new object on UPDATE), narrowed by the binding's ``matchResources``; the
  policy and binding kinds themselves are exempt;
- ``paramKind``/``paramRef`` (by name or selector, namespace defaulting to the request's for
  namespaced params, each param found validated in turn, ``parameterNotFoundAction`` Allow/Deny);
- ``matchConditions``, lazily evaluated ``variables``, ``validations`` with message, messageExpression
  and reason, and ``failurePolicy`` Fail (default) or Ignore for errors;
- the denial: a Status with the validation's reason (Invalid 422 by default, Forbidden 403,
  Unauthorized 401, RequestEntityTooLarge 413) and the message ``<resource> "<name>" is forbidden:
  ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: <m>``.

Not implemented: auditAnnotations, the ``authorizer`` variable, type checking of expressions against
schemas, and matchPolicy Equivalent (a rule matches the request's own group/version only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.kube import errors, expressions
from sandbox.kube.errors import ApiError
from sandbox.kube.identity import RequestContext, UserInfo
from sandbox.kube.kinds import ResourceKind
from sandbox.kube.selectors import label_selector_matches

Body = dict[str, Any]
POLICY_KEY = "validatingadmissionpolicies.admissionregistration.k8s.io"
BINDING_KEY = "validatingadmissionpolicybindings.admissionregistration.k8s.io"
_EXEMPT = (POLICY_KEY, BINDING_KEY)
_CODES = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413, "Invalid": 422}


@dataclass(frozen=True)
class Attributes:
    """One write as admission sees it (``request`` in CEL), with the object in its final form."""

    operation: str  # CREATE, UPDATE or DELETE
    kind: ResourceKind
    version: str
    subresource: str | None
    namespace: str
    name: str
    user: UserInfo
    dry_run: bool
    obj: Body | None
    old: Body | None
    gvk: tuple[str, str, str] | None = None  # the kind of the body when it is not the resource's (Scale)

    def request(self) -> Body:
        group, version, kind = self.gvk or (self.kind.group, self.version, self.kind.kind)
        return {
            "operation": self.operation,
            "userInfo": self.user.as_cel(),
            "name": self.name,
            "namespace": self.namespace,
            "resource": {"group": self.kind.group, "version": self.version, "resource": self.kind.plural},
            "subResource": self.subresource or "",
            "kind": {"group": group, "version": version, "kind": kind},
            "requestResource": {
                "group": self.kind.group,
                "version": self.version,
                "resource": self.kind.plural,
            },
            "requestSubResource": self.subresource or "",
            "requestKind": {"group": group, "version": version, "kind": kind},
            "dryRun": self.dry_run,
        }


class _Refused(Exception):
    """A (policy, binding) pair could not be evaluated; ``failurePolicy`` decides what that means."""


@dataclass(frozen=True)
class _Decision:
    message: str
    reason: str = ""
    error: bool = False


class PolicyAdmission:
    """Evaluates the store's ValidatingAdmissionPolicies for a write; ``store`` is an ObjectStore.

    Called inside the store's (re-entrant) lock, so the policies, bindings, params and namespace it
    reads are consistent with the write being admitted.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._pairs: tuple[tuple[int, ...], list[tuple[Body, Body]]] | None = None

    def _policy_pairs(self) -> list[tuple[Body, Body]]:
        """(binding, policy) pairs in evaluation order, recomputed only when a policy or binding changed
        (every request is still evaluated against them; they are read, never changed)."""
        version = self.store.kinds_version(POLICY_KEY, BINDING_KEY)
        cached = self._pairs
        if cached is not None and cached[0] == version:
            return cached[1]
        registry = self.store.registry
        policy_kind, binding_kind = registry.by_key(POLICY_KEY), registry.by_key(BINDING_KEY)
        if policy_kind is None or binding_kind is None:
            return []
        policies = {p["metadata"]["name"]: p for p in self.store.list(policy_kind)[0]}
        bindings = sorted(
            self.store.list(binding_kind)[0],
            key=lambda b: ((b.get("spec") or {}).get("policyName", ""), b["metadata"]["name"]),
        )
        pairs = [
            (binding, policies[name])
            for binding in bindings
            if (name := (binding.get("spec") or {}).get("policyName", "")) in policies
        ]
        self._pairs = (version, pairs)
        return pairs

    def admit(self, attrs: Attributes, context: RequestContext) -> None:
        """Return if allowed (warnings added to ``context``); raise the denial :class:`ApiError` if not."""
        if attrs.kind.key in _EXEMPT:
            return
        pairs = self._policy_pairs()
        if not pairs:
            return
        namespace = self.store.find("namespaces", None, attrs.namespace) if attrs.namespace else None
        denied: list[tuple[str, str, _Decision]] = []
        bindings: expressions.Bindings | None = None  # built on the first match, shared by all pairs
        for binding, policy in pairs:
            bspec = binding.get("spec") or {}
            spec = policy.get("spec") or {}
            if not _matches(spec.get("matchConstraints"), attrs, namespace, rules_required=True):
                continue
            if bspec.get("matchResources") and not _matches(
                bspec["matchResources"], attrs, namespace, rules_required=False
            ):
                continue
            actions = bspec.get("validationActions") or []
            pname, bname = policy["metadata"]["name"], binding["metadata"]["name"]
            if bindings is None:
                bindings = expressions.Bindings(
                    {
                        "object": attrs.obj,
                        "oldObject": attrs.old,
                        "request": attrs.request(),
                        "namespaceObject": namespace,
                    }
                )
            for decision in self._decide(spec, bspec, attrs, bindings):
                if "Deny" in actions:
                    denied.append((pname, bname, decision))
                if "Warn" in actions:
                    context.warnings.append(
                        f"Validation failed for ValidatingAdmissionPolicy '{pname}' with binding "
                        f"'{bname}': {decision.message}"
                    )
        if denied:
            raise _denial(attrs, *denied[0])

    # --- evaluation -----------------------------------------------------------------------------

    def _decide(
        self, spec: Body, bspec: Body, attrs: Attributes, bindings: expressions.Bindings
    ) -> list[_Decision]:
        """The failing validations of one (policy, binding) pair; errors already through failurePolicy.

        ``bindings`` holds the request's object, oldObject, request and namespaceObject, converted to
        CEL once for every pair and param (the costly part of an evaluation); ``params`` is rebound.
        """
        ignore = spec.get("failurePolicy") == "Ignore"
        try:
            params = self._params(spec, bspec, attrs)
        except _Refused as exc:
            return [] if ignore else [_Decision(str(exc), error=True)]
        decisions: list[_Decision] = []
        for param in params:
            bindings.bind("params", param)
            scope = _Scope(bindings, spec.get("variables") or [])
            found = _validate(spec, scope)
            decisions += [d for d in found if not (d.error and ignore)]
        return decisions

    def _params(self, spec: Body, bspec: Body, attrs: Attributes) -> list[Body | None]:
        param_kind = spec.get("paramKind")
        if not param_kind:
            return [None]
        api_version, kind_name = param_kind.get("apiVersion", ""), param_kind.get("kind", "")
        kind = self.store.registry.for_api_version(api_version, kind_name)
        if kind is None:
            raise _Refused(
                "failed to configure policy: failed to find resource referenced by paramKind: "
                f"'{api_version}, Kind={kind_name}'"
            )
        ref = bspec.get("paramRef")
        if not ref:
            raise _Refused("failed to configure binding: paramKind is set but the binding has no paramRef")
        namespace = ref.get("namespace") or ""
        if kind.namespaced and not namespace:
            if not attrs.namespace:
                raise _Refused(
                    "failed to configure binding: cannot use namespaced paramRef in policy binding "
                    "that matches cluster-scoped resources"
                )
            namespace = attrs.namespace
        if ref.get("name"):
            found = self.store.find(kind, namespace or None, ref["name"])
            params = [found] if found is not None else []
        else:
            items = self.store.list(kind, namespace or None)[0]
            selector = ref.get("selector") or {}
            params = [p for p in items if label_selector_matches(selector, p["metadata"].get("labels"))]
        if not params and ref.get("parameterNotFoundAction", "Deny") == "Deny":
            raise _Refused(
                "failed to configure binding: no params found for policy binding with `Deny` "
                "parameterNotFoundAction"
            )
        return list(params)


class _Scope:
    """One (pair, param) evaluation over the request's bindings, ``variables`` computed on first use.

    Upstream evaluates a variable only when an expression reads it (and once per request), so an
    error in a variable nobody reads does not fail the request; an expression reading a failed
    variable fails with that variable's error. A variable sees only the variables defined before it.
    """

    def __init__(self, bindings: expressions.Bindings, variables: list[Body]) -> None:
        self.bindings = bindings
        self.order = [v.get("name", "") for v in variables]
        self.definitions = {v.get("name", ""): v.get("expression", "") for v in variables}
        self.values: dict[str, Any] = {}
        self.failures: dict[str, str] = {}

    def evaluate(self, text: str, limit: int | None = None) -> Any:
        """Evaluate ``text`` seeing the variables defined before index ``limit`` (all if None)."""
        visible = self.order if limit is None else self.order[:limit]
        used = [n for n in expressions.variable_names(text) if n in visible]
        values: dict[str, Any] = {}
        for name in used:
            self._compute(name)
            if name in self.failures:
                raise expressions.EvaluationError(
                    f"expression '{text}' resulted in error: composited variable \"{name}\" fails to "
                    f"evaluate: {self.failures[name]}"
                )
            values[name] = self.values[name]
        return self.bindings.evaluate(text, values)

    def prepare(self, validations: list[str]) -> None:
        """Convert at once what the variables and ``validations`` read (see Bindings.prepare)."""
        self.bindings.prepare([*self.definitions.values(), *validations])

    def _compute(self, name: str) -> None:
        if name in self.values or name in self.failures:
            return
        try:
            self.values[name] = self.evaluate(self.definitions[name], self.order.index(name))
        except expressions.EvaluationError as exc:
            self.failures[name] = str(exc)


def _validate(spec: Body, scope: _Scope) -> list[_Decision]:
    """matchConditions, then every validation; the decisions that deny (or errored)."""
    errored: list[str] = []
    for condition in spec.get("matchConditions") or []:
        try:
            result = scope.evaluate(condition.get("expression", ""))
        except expressions.EvaluationError as exc:
            errored.append(f"matchCondition '{condition.get('name', '')}': {exc}")
            continue
        if result is not True:
            return []  # a false condition skips the policy, whatever the others say
    if errored:
        return [_Decision("; ".join(errored), error=True)]
    scope.prepare([v.get("expression", "") for v in spec.get("validations") or []])
    decisions: list[_Decision] = []
    for validation in spec.get("validations") or []:
        text = validation.get("expression", "")
        try:
            result = scope.evaluate(text)
        except expressions.EvaluationError as exc:
            decisions.append(_Decision(str(exc), error=True))
            continue
        if not isinstance(result, bool):
            decisions.append(_Decision(f"expression '{text}' must evaluate to bool", error=True))
        elif not result:
            decisions.append(_Decision(_message(validation, scope), validation.get("reason") or "Invalid"))
    return decisions


def _message(validation: Body, scope: _Scope) -> str:
    """messageExpression if it yields a one-line, non-empty string; else message; else the expression."""
    fallback = validation.get("message") or f"failed expression: {validation.get('expression', '')}"
    if validation.get("messageExpression"):
        try:
            result = scope.evaluate(validation["messageExpression"])
        except expressions.EvaluationError:
            return fallback
        if isinstance(result, str) and result.strip() and "\n" not in result and len(result) <= 5000:
            return result
    return fallback


# --- matching ---------------------------------------------------------------------------------


def _labels(obj: Body | None) -> dict[str, str] | None:
    return None if obj is None else (obj.get("metadata") or {}).get("labels") or {}


def _matches(
    resources: Body | None, attrs: Attributes, namespace: Body | None, *, rules_required: bool
) -> bool:
    """Whether a MatchResources (a policy's matchConstraints or a binding's matchResources) selects."""
    resources = resources or {}
    if not _namespace_matches(resources.get("namespaceSelector"), attrs, namespace):
        return False
    selector = resources.get("objectSelector")
    if selector and not any(
        label_selector_matches(selector, labels)
        for labels in (_labels(attrs.obj), _labels(attrs.old))
        if labels is not None
    ):
        return False
    rules = resources.get("resourceRules") or []
    if (rules or rules_required) and not any(_rule_matches(rule, attrs) for rule in rules):
        return False
    return not any(_rule_matches(rule, attrs) for rule in resources.get("excludeResourceRules") or [])


def _namespace_matches(selector: Body | None, attrs: Attributes, namespace: Body | None) -> bool:
    if not selector:
        return True
    if attrs.kind.key == "namespaces":  # a Namespace is matched on its own labels
        return label_selector_matches(selector, _labels(attrs.obj if attrs.obj is not None else attrs.old))
    if not attrs.kind.namespaced:
        return True  # other cluster-scoped objects are never skipped by a namespaceSelector
    return label_selector_matches(selector, _labels(namespace))


def _rule_matches(rule: Body, attrs: Attributes) -> bool:
    def listed(values: list[str] | None, value: str) -> bool:
        return bool(values) and ("*" in values or value in values)  # type: ignore[operator]

    if not listed(rule.get("operations"), attrs.operation):
        return False
    if not listed(rule.get("apiGroups"), attrs.kind.group) or not listed(
        rule.get("apiVersions"), attrs.version
    ):
        return False
    scope = rule.get("scope") or "*"
    if (scope == "Cluster" and attrs.kind.namespaced) or (
        scope == "Namespaced" and not attrs.kind.namespaced
    ):
        return False
    names = rule.get("resourceNames")
    if names and attrs.name not in names:
        return False
    return any(
        _resource_matches(r, attrs.kind.plural, attrs.subresource) for r in rule.get("resources") or []
    )


def _resource_matches(pattern: str, plural: str, subresource: str | None) -> bool:
    """``*`` (resources, not subresources), ``*/*``, ``x/*``, ``*/status``, ``x`` or ``x/status``."""
    resource, _, sub = pattern.partition("/")
    if resource not in ("*", plural):
        return False
    if not sub:
        return subresource is None
    return sub in ("*", subresource)


def _denial(attrs: Attributes, policy: str, binding: str, decision: _Decision) -> ApiError:
    """The Status a real server sends for a denial (admission.NewForbidden, then the reason's code)."""
    cause = (
        f"ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {decision.message}"
    )
    resource = errors.qualified(attrs.kind.plural, attrs.kind.group)
    target = f'{resource} "{attrs.name}"' if attrs.name else resource
    reason = decision.reason or "Invalid"
    details: Body = {"name": attrs.name, "kind": attrs.kind.plural, "causes": [{"message": cause}]}
    if attrs.kind.group:
        details["group"] = attrs.kind.group
    return ApiError(_CODES.get(reason, 422), reason, f"{target} is forbidden: {cause}", details)
