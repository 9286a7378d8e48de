"""The sandbox's cheap CEL evaluation (expressions.Bindings, cel_paths) against the plain one: a new
``cel.Context`` holding every value whole for each expression, which is what the sandbox did before
and what a real server's semantics amount to. Every expression below, in any order on one shared
Bindings, must give the same result or the same error as the plain evaluation."""

from __future__ import annotations

import copy
import gc
import weakref
from typing import Any

import cel
import pytest

from sandbox.kube import expressions
from sandbox.kube.cel_paths import Selection, covers, merge, prune, selections, tokens

NAMES = frozenset({"object", "oldObject", "params", "request", "namespaceObject"})

OBJECT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "labels": {"app": "web", "failover.hahomelabs.com/group": "shop"},
        "annotations": {"failover.hahomelabs.com/epoch": "7"},
        "resourceVersion": "12",
    },
    "spec": {
        "replicas": 3,
        "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}},
        "paused": None,
    },
    "status": {"replicas": 3, "conditions": [{"type": "Available", "status": "True"}]},
}
OLD = copy.deepcopy(OBJECT)
OLD["metadata"]["annotations"]["failover.hahomelabs.com/epoch"] = "9"
OLD["spec"]["replicas"] = 1
PARAMS = {"metadata": {"name": "shop", "annotations": {"failover.hahomelabs.com/fence": "8"}}, "spec": {}}
REQUEST = {"operation": "UPDATE", "userInfo": {"username": "system:serviceaccount:x:y", "groups": ["a"]}}
VALUES = {
    "object": OBJECT,
    "oldObject": OLD,
    "params": PARAMS,
    "request": REQUEST,
    "namespaceObject": None,
}
VARIABLES = {"group": "shop", "epoch": 7}

EXPRESSIONS = [
    # field selections only: pruned
    "has(object.metadata.labels) && 'failover.hahomelabs.com/group' in object.metadata.labels",
    "int(object.metadata.annotations['failover.hahomelabs.com/epoch']) < "
    "int(oldObject.metadata.annotations['failover.hahomelabs.com/epoch'])",
    "params.metadata.name == variables.group && variables.epoch >= 7",
    "request.userInfo.username.startsWith('system:serviceaccount:')",
    "has(object.metadata.finalizers)",
    "has(object.spec.paused) && object.spec.paused == null",
    "object.spec.template.spec.containers.all(c, c.image.startsWith('nginx'))",
    "object.spec.template.spec.containers[0].name",
    "object.status.conditions.exists(c, c.type == 'Available' && c.status == 'True')",
    "object.metadata.labels.size()",
    "'object.status' + \"oldObject.spec\" + r'params' + '''request.x'''",
    "object . metadata . name + '/' + object.metadata.namespace",
    "string(variables.epoch) + ' ' + string(object.spec.replicas) + ' ' + string(has(object.spec))",
    # errors: a missing key, a selection on a list, a bad conversion, a type mismatch
    "object.metadata.nope",
    "object.spec.template.spec.containers.name",
    "int(object.metadata.name)",
    "object.spec.replicas + 'x'",
    "variables.missing",
    "namespaceObject.metadata.name",
    # whole values, indexing, macros and shadowing: not pruned
    "object == oldObject",
    "object.spec == oldObject.spec",
    "object['metadata']['name']",
    "object.all(k, k != '')",
    "size(object)",
    "[OBJECT_NAME].all(object, object.size() > 0)".replace("OBJECT_NAME", "'web'"),
    "[{'metadata': 1}].all(object, object.metadata == 1) && object.metadata.name == 'web'",
    "oldObject.spec.replicas < object.spec.replicas // a comment",
    "undeclared.field",
]


def plain(text: str) -> tuple[str, Any]:
    """The result (or error wording) with every value converted whole, for ``text`` alone."""
    functions = {"string": expressions._string}  # the string(bool) cel-go has, as the sandbox adds it
    context = cel.Context(variables={**VALUES, "variables": VARIABLES}, functions=functions)
    try:
        return "ok", cel.compile(text).execute(context)
    except Exception as exc:
        detail = f"no such key: {exc.args[0]}" if isinstance(exc, KeyError) and exc.args else str(exc)
        return "error", f"expression '{text}' resulted in error: {detail}"


def shared(bindings: expressions.Bindings, text: str) -> tuple[str, Any]:
    try:
        return "ok", bindings.evaluate(text, VARIABLES)
    except expressions.EvaluationError as exc:
        return "error", str(exc)


@pytest.mark.parametrize("order", ["forward", "reverse", "prepared"])
def test_a_shared_bindings_answers_every_expression_as_a_whole_context_does(order: str) -> None:
    texts = EXPRESSIONS if order != "reverse" else EXPRESSIONS[::-1]
    bindings = expressions.Bindings(VALUES)
    if order == "prepared":
        bindings.prepare(texts)
    for text in texts:
        assert shared(bindings, text) == plain(text), text


def test_each_expression_alone_answers_as_a_whole_context_does() -> None:
    for text in EXPRESSIONS:
        assert shared(expressions.Bindings(VALUES), text) == plain(text), text


def test_a_rebound_value_is_converted_again() -> None:
    bindings = expressions.Bindings(VALUES)
    assert bindings.evaluate("params.metadata.name") == "shop"
    bindings.bind("params", {"metadata": {"name": "other"}})
    assert bindings.evaluate("params.metadata.name") == "other"
    bindings.bind("params", None)
    assert bindings.evaluate("params == null") is True


def test_the_values_given_are_not_changed() -> None:
    before = copy.deepcopy(VALUES)
    bindings = expressions.Bindings(VALUES)
    bindings.prepare(EXPRESSIONS)
    for text in EXPRESSIONS:
        shared(bindings, text)
    assert before == VALUES


def test_a_bindings_is_freed_once_unused() -> None:
    """The binding's Context is invisible to the garbage collector: a cycle through its resolver
    would keep every admitted write's objects forever."""
    bindings = expressions.Bindings(VALUES)
    assert bindings.evaluate("variables.epoch == 7 && object.metadata.name == 'web'", VARIABLES) is True
    ref = weakref.ref(bindings)
    del bindings
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("object.metadata.labels.a", {"object": {"metadata": {"labels": {"a": None}}}}),
        (
            "has(object.metadata.labels) && object.metadata.annotations.x == ''",
            {"object": {"metadata": {"labels": None, "annotations": {"x": None}}}},
        ),
        ("object.metadata.labels.a == '' && object.metadata == null", {"object": {"metadata": None}}),
        ("object.spec.containers.all(c, c.a)", {"object": {"spec": {"containers": None}}}),
        ("object.spec.size() > 0", {"object": {"spec": None}}),
        ("object.x == oldObject", {"object": {"x": None}, "oldObject": None}),
        ("object['x']", {"object": None}),
        ("[1].all(object, object.x)", {"object": None}),
        ("a.object.x == 1", {}),
        ("'object.x' == r\"object\"", {}),
        ("object.x // object.y", {"object": None}),
        ("'unterminated", {"object": None}),
    ],
)
def test_selections_keep_what_each_mention_selects(text: str, expected: dict[str, Any]) -> None:
    found = selections(text, frozenset({"object", "oldObject"}))
    assert {name: found[name] for name in expected} == expected
    assert all(found[name] is None for name in found.keys() - expected.keys())  # unseen: whole


def test_tokens_skip_strings_and_give_up_on_comments() -> None:
    assert tokens("a.b == 'x.y' && \"z\" + '''q'r''' + b'\\x00'") == [
        "a",
        ".",
        "b",
        "=",
        "=",
        '"',
        "&",
        "&",
        '"',
        "+",
        '"',
        "+",
        '"',
    ]
    assert tokens("a // b") is None
    assert tokens("'a\\'b' + 'c") is None


def test_prune_merge_and_covers() -> None:
    value = {"metadata": {"labels": {"a": "1"}, "name": "x"}, "spec": [1, 2], "status": {}}
    assert prune(value, {"metadata": {"labels": None}, "spec": {"x": None}, "gone": None}) == {
        "metadata": {"labels": {"a": "1"}},
        "spec": [1, 2],  # not a map: whole
    }
    assert prune(value, None) is value
    one: Selection = {"metadata": {"labels": None}}
    other: Selection = {"metadata": {"name": None}, "spec": None}
    merged = merge(one, other)
    assert merged == {"metadata": {"labels": None, "name": None}, "spec": None}
    assert one == {"metadata": {"labels": None}}  # cached selections are never changed
    assert covers(merged, one) and covers(merged, other) and not covers(one, merged)
    assert covers(None, merged) and not covers(merged, None)
