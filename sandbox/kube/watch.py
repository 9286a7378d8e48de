"""Watch streams: turn the store's event history into the events one watch request should see.

Follows the real watch cache: a watch from resourceVersion ``N`` gets every matching change after
``N``; from ``0`` or no resourceVersion it first gets an ADDED per existing object; a change that moves
an object into or out of the selector arrives as ADDED or DELETED; with ``allowWatchBookmarks``
it gets BOOKMARK events carrying the latest resourceVersion when idle; a starting point older than the
kept history, or a watcher that falls behind it, gets one ERROR event with a 410 ``Expired`` Status and
the stream ends. The stream ends on ``timeoutSeconds`` or when the server stops.

Events carry read-only views of the stored objects (shallow copies, see ``ObjectStore.view``): a
change is copied once into the history, not once per watcher. This module yields event dicts; it must
not write to sockets or change objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.kube.errors import ApiError
from sandbox.kube.kinds import ResourceKind
from sandbox.kube.selectors import Matcher
from sandbox.kube.store import ObjectStore, StoredEvent


@dataclass
class WatchRequest:
    """What one ``?watch=true`` request asked for."""

    kind: ResourceKind
    version: str
    namespace: str | None
    labels: Matcher
    fields: Matcher
    resource_version: str | None
    timeout: float
    bookmarks: bool
    bookmark_interval: float


def _translate(event: StoredEvent, req: WatchRequest) -> str | None:
    """The event type this watcher sees for a stored change, or None when it should not see it."""
    if event.key != req.kind.key:
        return None
    if req.namespace and req.kind.namespaced and event.namespace != req.namespace:
        return None
    now = req.labels(event.obj) and req.fields(event.obj)
    if event.type != "MODIFIED":
        return event.type if now else None
    before = event.old is not None and req.labels(event.old) and req.fields(event.old)
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else None


def stream_events(
    store: ObjectStore, req: WatchRequest, stopped: Callable[[], bool]
) -> Iterator[dict[str, Any]]:
    """Yield ``{"type", "object"}`` dicts until timeout, a stop, or a 410 (sent as an ERROR event)."""
    deadline = time.monotonic() + req.timeout
    try:
        cursor, initial = store.watch_start(req.resource_version)
    except ApiError as exc:
        if exc.code != 410:
            raise
        yield {"type": "ERROR", "object": exc.status()}
        return
    if initial:
        objects, cursor = store.snapshot(req.kind, req.namespace)
        for obj in objects:
            if req.labels(obj) and req.fields(obj):
                yield {"type": "ADDED", "object": store.view(req.kind, obj, req.version)}
    last_sent = time.monotonic()
    while not stopped():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        # Short waits so a stopping server or a reached deadline ends the stream promptly.
        wait = min(remaining, 0.2, req.bookmark_interval if req.bookmarks else 0.2)
        try:
            events, cursor = store.events_after(cursor, wait)
        except ApiError as exc:
            yield {"type": "ERROR", "object": exc.status()}
            return
        for event in events:
            seen = _translate(event, req)
            if seen is not None:
                last_sent = time.monotonic()
                yield {"type": seen, "object": store.view(req.kind, event.obj, req.version)}
        if req.bookmarks and time.monotonic() - last_sent >= req.bookmark_interval:
            last_sent = time.monotonic()
            yield {
                "type": "BOOKMARK",
                "object": {
                    "kind": req.kind.kind,
                    "apiVersion": req.kind.api_version(req.version),
                    "metadata": {"resourceVersion": str(cursor)},
                },
            }
