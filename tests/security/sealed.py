"""Reading and writing sealed run values by hand, as an attacker with Redis access would: the run's
fields with the ``mac`` beside them, written back byte for byte in the store's layout
(``{"mac":"hmac-sha256-v2:<hex>","run":<JSON>}``), so that only what a test altered differs."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from fsm.run import Run
from workers.trust import MAC_FIELD, RUN_FIELD, SCHEME, canonical


def fields_of(raw: bytes | str) -> dict[str, Any]:
    """The run's fields of a sealed value, with its ``mac`` among them."""
    sealed: dict[str, Any] = json.loads(raw)
    assert list(sealed) == [MAC_FIELD, RUN_FIELD], "not a value in the store's layout"
    return {**sealed[RUN_FIELD], MAC_FIELD: sealed[MAC_FIELD]}


def sealed_value(document: dict[str, Any]) -> str:
    """``document`` (fields and ``mac``, as :func:`fields_of` gives) in the store's layout; a document
    whose ``mac`` is not of the current scheme (or that has none) as plain JSON, the earlier layout."""
    fields = {k: v for k, v in document.items() if k != MAC_FIELD}
    mac = document.get(MAC_FIELD)
    if isinstance(mac, str) and mac.startswith(SCHEME):
        return (
            '{"mac":"'
            + mac
            + '","run":'
            + json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
            + "}"
        )
    return json.dumps(document)


def earlier_format(key: str, run: Run) -> str:
    """The value an earlier version wrote: the run's fields plus ``mac`` over their canonical JSON."""
    document = run.model_dump(mode="json")
    document[MAC_FIELD] = (
        "hmac-sha256:" + hmac.new(key.encode(), canonical(document), hashlib.sha256).hexdigest()
    )
    return json.dumps(document)
