"""CEL expressions, compiled once and evaluated against plain JSON-shaped dicts.

ValidatingAdmissionPolicies and CRD ``x-kubernetes-validations`` rules are CEL, as on a real server;
both go through here so they share one compile cache (keyed by the expression text: a policy is
evaluated on every matching write, and recompiling each time would dominate the request) and one
error wording. Errors read like kube-apiserver's (``expression '...' resulted in error: ...``) so a
denial seen through the sandbox looks like one seen on a cluster. This module only compiles and
evaluates; it must not know about policies, schemas or the store.

Cost model of the ``cel`` binding (measured, see tests/benchmarks/bench_cel.py): turning a Python value
into a CEL value costs a few microseconds per string or map entry, so a stored Deployment takes ~200
µs, while running a compiled program on a context already holding its values takes ~1 µs (the first
run after the context changed rebuilds it, at a cost growing with what it holds). The naive way (a
new ``cel.Context`` of every variable for each expression) converted the same objects over and over:
a write admitted by the fence policy ran 7 expressions, each converting object, oldObject, request,
namespaceObject and params. :class:`Bindings` converts each value once per scope, only when an
expression names it, and only the fields the expressions select on it (cel_paths.py): the fence
policy reads ``object.metadata.labels`` and ``params.metadata.annotations``, not specs and statuses.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import cel

from sandbox.kube.cel_paths import Selection, covers, merge, prune, selections

# text -> (program, names it reads, what it selects on each name: None when it uses it otherwise)
_Entry = tuple[Any, frozenset[str], dict[str, Selection | None]]
_cache: dict[str, _Entry] = {}
_cache_lock = threading.Lock()
_VARIABLE_REF = re.compile(r"\bvariables\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_variable_names: dict[str, tuple[str, ...]] = {}
# The name admission policies read their own ``variables`` under (see Bindings.evaluate).
POLICY_VARIABLES = "variables"


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


def _compiled(text: str) -> _Entry:
    """The compiled program of ``text``, the top-level names it reads and the fields it selects on
    them, cached by text."""
    entry = _cache.get(text)  # a dict read is atomic; the lock only orders insertions
    if entry is None:
        try:
            compiled = cel.compile(text)
        except ValueError as exc:
            raise CompileError(f"compilation failed: {exc}") from exc
        names = frozenset(compiled.variables())
        entry = (compiled, names, selections(text, names))
        with _cache_lock:
            entry = _cache.setdefault(text, entry)
    return entry


def program(text: str) -> Any:
    """The compiled program of ``text``, from the cache after the first call."""
    return _compiled(text)[0]


def cache_size() -> int:
    """How many distinct expressions have been compiled (tests check that caching works)."""
    with _cache_lock:
        return len(_cache)


def _failure(text: str, exc: Exception) -> EvaluationError:
    """The kube-apiserver wording of a run-time failure of ``text``."""
    detail = f"no such key: {exc.args[0]}" if isinstance(exc, KeyError) and exc.args else str(exc)
    return EvaluationError(f"expression '{text}' resulted in error: {detail}")


def _resolver(variables: list[dict[str, Any] | None]) -> Any:
    """The binding asks here first for every name; None falls through to the converted values."""

    def resolve(name: str) -> Any:
        return variables[0] if name == POLICY_VARIABLES else None

    return resolve


class Bindings:
    """The CEL context of a series of evaluations over the same values (one admission request, one
    CRD rule), each value converted to CEL once, on the first expression that names it, and only
    the parts the expressions select on it (cel_paths.py; more is converted when a later one needs it).

    An expression sees exactly what a context of all ``values`` would show it: CEL has no dynamic
    lookup, so a name the program does not mention (``Program.variables()``, which also lists
    comprehension variables, so shadowing is covered) cannot change its result, and a pruned value
    answers every selection the expression makes as the whole one does. Policy ``variables`` change
    from one expression to the next (each sees only those defined before it), so they are not stored
    in the context but served by its resolver from what :meth:`evaluate` was given. Not thread-safe:
    one request, one thread.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)
        self._loaded: dict[str, Selection | None] = {}  # name -> what the context holds (None: all)
        # What the running expression reads as ``variables``. The resolver must not hold ``self``: the
        # binding's Context is not tracked by Python's garbage collector, so a cycle through it would
        # never be freed (every admitted write would leak its objects).
        self._variables: list[dict[str, Any] | None] = [None]
        self._context = cel.Context(functions=_FUNCTIONS)
        self._context.set_variable_resolver(_resolver(self._variables))

    def bind(self, name: str, value: Any) -> None:
        """Give ``name`` a new value (the next param of a policy); converted again when next named."""
        self._values[name] = value
        self._loaded.pop(name, None)

    def _load(self, name: str, wanted: Selection | None) -> None:
        """Make sure the context holds at least what ``wanted`` selects of ``name`` (None: all)."""
        if name in self._loaded:
            held = self._loaded[name]
            if covers(held, wanted):
                return
            wanted = merge(held, wanted)
        self._context.add_variable(name, prune(self._values[name], wanted))
        self._loaded[name] = wanted

    def prepare(self, texts: list[str]) -> None:
        """Convert at once what ``texts`` will read: the context is rebuilt on the first run after
        each change (at a cost that grows with what it holds), so one change beats one per expression.

        A failure here is left for the evaluation that needs the value to report in its words.
        """
        wanted: dict[str, Selection | None] = {}
        for text in texts:
            try:
                _, names, selected = _compiled(text)
            except CompileError:
                continue
            for name in names & self._values.keys():
                wanted[name] = merge(wanted[name], selected[name]) if name in wanted else selected[name]
        for name, selection in wanted.items():
            try:
                self._load(name, selection)
            except Exception:  # the binding's conversion errors; evaluate() raises them again
                continue

    def evaluate(self, text: str, variables: dict[str, Any] | None = None) -> Any:
        """Evaluate ``text``; ``variables`` (when given) is what it reads as ``variables``.

        :class:`EvaluationError` on any failure, worded as :func:`evaluate` words it.
        """
        try:
            compiled, names, selected = _compiled(text)
        except CompileError as exc:
            raise EvaluationError(f"expression '{text}' resulted in error: {exc}") from exc
        self._variables[0] = variables
        try:
            for name in names:
                if name in self._values:
                    self._load(name, selected[name])
            return compiled.execute(self._context)
        except Exception as exc:  # the binding raises KeyError, TypeError, RuntimeError, ValueError...
            raise _failure(text, exc) from exc
        finally:
            self._variables[0] = None


def evaluate(text: str, context: dict[str, Any]) -> Any:
    """Evaluate ``text`` with ``context`` as its variables; :class:`EvaluationError` on any failure.

    For one expression; a series over the same values should share one :class:`Bindings`.
    """
    values = dict(context)
    variables = values.pop(POLICY_VARIABLES) if isinstance(values.get(POLICY_VARIABLES), dict) else None
    return Bindings(values).evaluate(text, variables)


def references(text: str) -> set[str]:
    """The top-level variables ``text`` mentions (``self``, ``oldSelf``, ``object``...)."""
    try:
        return set(_compiled(text)[1])
    except CompileError:
        return set()


def variable_names(text: str) -> list[str]:
    """The ``variables.<name>`` a policy expression uses, in order of first mention (cached: a policy
    reads them for every expression of every write it admits)."""
    names = _variable_names.get(text)
    if names is None:
        names = _variable_names.setdefault(text, tuple(dict.fromkeys(_VARIABLE_REF.findall(text))))
    return list(names)
