"""Runs are data a worker acts on, so every run the store writes is authenticated (issue 12).

The run store shares Redis with the broker, and Redis is reachable by more than the orchestrator. A
worker must therefore never act on a run it did not write itself: every run value is sealed with an
HMAC-SHA-256 keyed by ``FAILOVER_RUN_KEY``, and opened (verified) on every load.

The stored value is ``{"mac":"hmac-sha256-v2:<64 hex>","run":<the run's JSON>}``, written byte for
byte as shown: the MAC covers the exact bytes of the run's JSON between ``"run":`` and the final
``}``, so sealing is one serialisation and opening one HMAC over stored bytes plus one parse (both in
pydantic-core) — the run MAC used to cost 14 % of a worker's time at 1,000 groups (issue 15). Runs
sealed by earlier versions (``{...the run's fields..., "mac":"hmac-sha256:<hex>"}``, the MAC over
the canonical JSON: sorted keys, no whitespace, without ``mac``) are still opened and are sealed
again in the current format, like a run sealed with the previous key. A run that fails verification is
refused: it is reported once per site as the security event ``security.forged_run`` (run id and
reason, never the payload) and counted in ``failover_forged_runs_total``, and the caller sees no run at
all, so no step runs, nothing is written and nothing is decided.

Key rotation: runs are sealed with the current key and opened with the current or the previous one
(``FAILOVER_RUN_KEY_PREVIOUS``); a run opened with the previous key is sealed again with the current
one by the store (:meth:`workers.store.RunStore.load`), and by every commit anyway. Once every live run
has been rewritten (at most ``run_ttl``), the previous key can be dropped.

Messages carry no MAC, and need none: a message names only ``(run_id, ticket)``, and everything a step
does comes from the authenticated run. The engine acts only when the run waits for exactly that step
and ticket (:meth:`fsm.run.Run.expects`), so a forged or replayed message can at most ask early for the
step the run already expects, which is the same idempotent work its own message does (the same
duplicate the broker may deliver at any time); a ``failover.start`` starts only a run that was
submitted, and ``failover.redrive`` runs the sweep every worker runs each second. What is not covered
here: replaying an older sealed value of the same run (see the README, "Safety").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import structlog

from fsm.run import Run

log = structlog.get_logger(__name__)

MAC_FIELD = "mac"
RUN_FIELD = "run"
_SCHEME = "hmac-sha256:"  # the earlier format: a MAC over the canonical JSON
SCHEME = "hmac-sha256-v2:"  # the current one: a MAC over the run's stored bytes
_HEAD = ('{"' + MAC_FIELD + '":"' + SCHEME).encode()
_HEX = 64  # SHA-256, hex
_NECK = ('","' + RUN_FIELD + '":').encode()
_BODY = len(_HEAD) + _HEX + len(_NECK)  # where the run's bytes start


class ForgedRun(Exception):
    """A run value that did not pass verification (no MAC, a wrong MAC, unreadable, another run's)."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id!r} refused: {reason}")
        self.run_id = run_id
        self.reason = reason


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes a MAC covers: ``document`` without its MAC, as sorted compact JSON."""
    body = {k: v for k, v in document.items() if k != MAC_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: bytes, document: dict[str, Any]) -> str:
    return _SCHEME + hmac.new(key, canonical(document), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Opened:
    """A verified run, and whether it must be sealed again (the previous key, or the earlier format)."""

    run: Run
    reseal: bool


def _sealed(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode()


class RunSigner:
    """Seals runs with the current key; opens runs sealed with the current or the previous key."""

    def __init__(self, key: str | bytes, previous: str | bytes | None = None) -> None:
        if not key:
            raise ValueError("the run key must not be empty")
        self._key = key.encode() if isinstance(key, str) else key
        self._previous = (previous.encode() if isinstance(previous, str) else previous) or None

    def tag(self, data: bytes) -> str:
        """A name for ``data`` that only a holder of the key can compute (refusal markers)."""
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def seal(self, run: Run) -> bytes:
        """The run as the value the store writes: ``{"mac":"hmac-sha256-v2:<hex>","run":<JSON>}``."""
        body = run.model_dump_json().encode()
        return _HEAD + _sealed(self._key, body) + _NECK + body + b"}"

    def open(self, raw: bytes | str, run_id: str) -> Opened:
        """The run in ``raw`` if its MAC verifies and it is the run ``run_id``; else ForgedRun."""
        value = raw.encode() if isinstance(raw, str) else raw
        if not value.startswith(_HEAD):
            return self._open_earlier(value, run_id)
        mac, body = value[len(_HEAD) : len(_HEAD) + _HEX], value[_BODY:-1]
        if value[len(_HEAD) + _HEX : _BODY] != _NECK or not value.endswith(b"}"):
            raise ForgedRun(run_id, "not a sealed run")
        reseal = False
        if not hmac.compare_digest(mac, _sealed(self._key, body)):
            if self._previous is None or not hmac.compare_digest(mac, _sealed(self._previous, body)):
                raise ForgedRun(run_id, "MAC does not verify with the current or the previous key")
            reseal = True
        try:
            run = Run.model_validate_json(body)
        except ValueError as error:
            raise ForgedRun(run_id, f"not a run ({type(error).__name__})") from None
        if run.run_id != run_id:
            raise ForgedRun(run_id, "a valid run of another id stored under this id")
        return Opened(run, reseal)

    def _open_earlier(self, raw: bytes, run_id: str) -> Opened:
        """A run sealed in the earlier format (the MAC in the run's fields, over its canonical JSON)."""
        try:
            document = json.loads(raw)
        except ValueError as error:
            raise ForgedRun(run_id, f"not JSON ({type(error).__name__})") from None
        if not isinstance(document, dict):
            raise ForgedRun(run_id, "not a JSON object")
        mac = document.get(MAC_FIELD)
        if not isinstance(mac, str) or not mac:
            raise ForgedRun(run_id, "no MAC")
        keys = [self._key] if self._previous is None else [self._key, self._previous]
        if not any(hmac.compare_digest(mac, _mac(key, document)) for key in keys):
            raise ForgedRun(run_id, "MAC does not verify with the current or the previous key")
        if document.get("run_id") != run_id:
            raise ForgedRun(run_id, "a valid run of another id stored under this id")
        try:
            run = Run.model_validate(document)
        except ValueError as error:
            raise ForgedRun(run_id, f"not a run ({type(error).__name__})") from None
        return Opened(run, reseal=True)


class Unsigned:
    """Development only (``FAILOVER_INSECURE_DEV=true`` without a key): writes runs without a MAC and
    accepts any run. Never in production: :meth:`workers.settings.Settings.run_signer` refuses."""

    def tag(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def seal(self, run: Run) -> bytes:
        return run.model_dump_json().encode()

    def open(self, raw: bytes | str, run_id: str) -> Opened:
        try:
            return Opened(Run.model_validate_json(raw), False)
        except ValueError as error:
            raise ForgedRun(run_id, f"not a run ({type(error).__name__})") from None


Signer = RunSigner | Unsigned


def report_forged(refused: ForgedRun) -> None:
    """Log the security event and count it (the store calls it once per refused value and site)."""
    log.error("security.forged_run", run_id=refused.run_id, reason=refused.reason)
    from workers.metrics import default_metrics  # prometheus_client only where a refusal happens

    default_metrics().forged_runs.inc()
