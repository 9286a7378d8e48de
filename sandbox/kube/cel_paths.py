"""Which parts of its variables a CEL expression can see, so that only those are converted to CEL.

The ``cel`` binding converts a Python value to CEL at a few microseconds per string (a Deployment takes
~200 µs), far more than running a compiled program. An admission policy like the fence policy reads
``object.metadata.labels``, ``object.metadata.annotations`` and ``params.metadata.annotations``: converting
the whole objects (spec, status, every other metadata field) was most of the sandbox's CPU when
workers fail groups over. :func:`selections` works out, from the expression's text, the field paths
it selects on each variable; :func:`prune` keeps only those; expressions.Bindings converts the result.

It errs one way only: a variable is pruned only when every mention of it is a chain of field
selections (``object.metadata.labels``); any other use (``object == oldObject``, ``object['spec']``,
``object.spec.all(...)`` keeps ``object.spec`` whole, ``object.?spec``, a comprehension variable of that
name, a comment, a string the scanner cannot follow) keeps the whole value. A pruned value holds every
selected path as in the original (absent where absent, non-maps whole), so each selection, ``has()``
test and error reads exactly as on the whole value. This module only reads text and prunes dicts.
"""

from __future__ import annotations

import re
from typing import Any

# A trie of selected field names; a None leaf (or a None selection) means "the whole value".
Selection = dict[str, "Selection | None"]

_STRING_PREFIX = re.compile(r"([rRbB]{0,2})(?='|\")")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z]*(\.[0-9]+([eE][+-]?[0-9]+)?)?")


def _string_end(text: str, start: int, *, raw: bool) -> int:
    """The index just past the string literal opening at ``start`` (a quote), -1 if unterminated."""
    quote = text[start] * 3 if text.startswith(text[start] * 3, start) else text[start]
    index = start + len(quote)
    while index < len(text):
        if text.startswith(quote, index):
            return index + len(quote)
        if text[index] == "\\" and not raw:
            index += 1  # the escaped character cannot close the string
        elif text[index] == "\n" and len(quote) == 1:
            return -1
        index += 1
    return -1


def tokens(text: str) -> list[str] | None:
    """Identifiers and single punctuation characters of ``text``, each string literal as ``"`` and
    each number as ``0``; None if it holds anything this scanner does not follow (a comment, an
    unterminated string): nothing is pruned then."""
    found: list[str] = []
    index, end = 0, len(text)
    while index < end:
        char = text[index]
        if char.isspace():
            index += 1
            continue
        prefix = _STRING_PREFIX.match(text, index)
        word = _WORD.match(text, index)
        number = _NUMBER.match(text, index)
        if prefix is not None:
            index = _string_end(text, prefix.end(), raw="r" in prefix.group(1).lower())
            if index < 0:
                return None
            found.append('"')
        elif word is not None:
            found.append(word.group())
            index = word.end()
        elif number is not None:
            found.append("0")
            index = number.end()
        elif text.startswith("//", index):
            return None
        else:
            found.append(char)
            index += 1
    return found


def _path(found: list[str], index: int) -> list[str]:
    """The field names selected after the identifier at ``index`` (``.a.b``, stopping before a
    ``.method(``); empty when the identifier is not followed by a field selection."""
    path: list[str] = []
    index += 1
    while index + 1 < len(found) and found[index] == "." and _WORD.fullmatch(found[index + 1]):
        if index + 2 < len(found) and found[index + 2] == "(":
            break  # a method or macro (``size()``, ``all(x, ...)``): what it is called on is whole
        path.append(found[index + 1])
        index += 2
    return path


def _with_path(selection: Selection | None, path: list[str]) -> Selection | None:
    """``selection`` also keeping everything under ``path`` (a new trie: cached ones are shared)."""
    if selection is None or not path:
        return None
    head, rest = path[0], path[1:]
    if head in selection:
        child = selection[head]
        return {**selection, head: None if child is None else _with_path(child, rest)}
    return {**selection, head: _with_path({}, rest) if rest else None}


def selections(text: str, names: frozenset[str]) -> dict[str, Selection | None]:
    """For each name ``text`` reads, the field paths it selects on it, or None for the whole value."""
    found = tokens(text)
    if found is None:
        return {name: None for name in names}
    result: dict[str, Selection | None] = {}
    for index, token in enumerate(found):
        if token not in names or (index and found[index - 1] == "."):
            continue  # not a variable of this program, or a field of something else (``x.object``)
        result[token] = _with_path(result.get(token, {}), _path(found, index))
    return {name: result.get(name) for name in names}  # a name never seen as a token: whole


def merge(one: Selection | None, other: Selection | None) -> Selection | None:
    """What keeps both ``one`` and ``other``."""
    if one is None or other is None:
        return None
    merged: Selection = dict(one)
    for key, sub in other.items():
        merged[key] = merge(one[key], sub) if key in one else sub
    return merged


def covers(held: Selection | None, wanted: Selection | None) -> bool:
    """Whether a value pruned to ``held`` shows everything ``wanted`` selects."""
    if held is None:
        return True
    if wanted is None:
        return False
    return all(key in held and covers(held[key], sub) for key, sub in wanted.items())


def prune(value: Any, selection: Selection | None) -> Any:
    """``value`` keeping only what ``selection`` selects (maps pruned, anything else whole)."""
    if selection is None or not isinstance(value, dict):
        return value
    return {key: prune(value[key], sub) for key, sub in selection.items() if key in value}
