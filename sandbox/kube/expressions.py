"""CEL expressions, compiled once and evaluated against plain JSON-shaped dicts.

ValidatingAdmissionPolicies and CRD ``x-kubernetes-validations`` rules are CEL, as on a real server;
both go through here so they share one compile cache (keyed by the expression text: a policy is
evaluated on every matching write, and recompiling each time would dominate the request) and one
error wording. Errors read like kube-apiserver's (``expression '...' resulted in error: ...``) so a
denial seen through the sandbox looks like one seen on a cluster. This module only compiles and
evaluates; it must not know about policies, schemas or the store.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import cel

_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()
_VARIABLE_REF = re.compile(r"\bvariables\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


class CompileError(ValueError):
    """The expression does not parse (a real server refuses the policy or CRD that holds it)."""


class EvaluationError(Exception):
    """The expression failed at run time: a missing key, ``int('x')``, a type mismatch..."""


def _string(value: Any) -> str:
    """``string(bool)``, which cel-go has and the binding lacks (the binding calls this only for
    the types its own ``string()`` has no overload for)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    raise TypeError(f"no such overload: string({type(value).__name__})")


_FUNCTIONS = {"string": _string}


def program(text: str) -> Any:
    """The compiled program of ``text``, from the cache after the first call."""
    with _cache_lock:
        compiled = _cache.get(text)
    if compiled is None:
        try:
            compiled = cel.compile(text)
        except ValueError as exc:
            raise CompileError(f"compilation failed: {exc}") from exc
        with _cache_lock:
            _cache[text] = compiled
    return compiled


def cache_size() -> int:
    """How many distinct expressions have been compiled (tests check that caching works)."""
    with _cache_lock:
        return len(_cache)


def evaluate(text: str, context: dict[str, Any]) -> Any:
    """Evaluate ``text`` with ``context`` as its variables; :class:`EvaluationError` on any failure."""
    try:
        return program(text).execute(cel.Context(variables=context, functions=_FUNCTIONS))
    except CompileError as exc:
        raise EvaluationError(f"expression '{text}' resulted in error: {exc}") from exc
    except Exception as exc:  # the binding raises KeyError, TypeError, RuntimeError, ValueError...
        detail = f"no such key: {exc.args[0]}" if isinstance(exc, KeyError) and exc.args else str(exc)
        raise EvaluationError(f"expression '{text}' resulted in error: {detail}") from exc


def references(text: str) -> set[str]:
    """The top-level variables ``text`` mentions (``self``, ``oldSelf``, ``object``...)."""
    try:
        return set(program(text).variables())
    except CompileError:
        return set()


def variable_names(text: str) -> list[str]:
    """The ``variables.<name>`` a policy expression uses, in order of first mention."""
    return list(dict.fromkeys(_VARIABLE_REF.findall(text)))
