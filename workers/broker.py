"""The Redis broker transport the workers use: kombu's, with one repair.

When a worker loses the broker, Celery's consumer first ``collect``s the connection, which closes its
channels and detaches the transport from it, then closes the connection again. A Redis channel whose
first close failed on the dead socket (it was waiting in BRPOP) is closed the second time through the
detached transport: with messages reserved and not yet acknowledged (a countdown message the worker
holds until it is due, or the step it runs), kombu 5.7 tries to give them back to the queue, reads the
broker's address from the transport's ``client`` (now None) and raises ``AttributeError: 'NoneType'
object has no attribute 'hostname'``. Celery calls that an unrecoverable error and the worker process
exits: when Redis restarts, every worker holding a countdown message stops at once.

Here that case raises the connection error it is, which Celery's cleanup ignores before it
reconnects. Nothing is lost: the reserved messages stay in the broker's unacked hash, which gives
them back after the visibility timeout, and if Redis came back empty the overdue sweep re-sends what
each run waits for (:mod:`workers.recovery`). ``tests/integration/test_broker_loss.py`` kills Redis
under a worker holding a countdown message and checks that the worker lives on.

:func:`install` makes kombu's transport names ``redis`` and ``rediss`` mean this transport (kombu's
alias table, its registry of transports), so URLs, TLS options and the URI shown in logs and Flower
stay what kombu makes of them; :func:`workers.app.create_app` calls it.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis

TRANSPORT = "workers.broker:Transport"
NAMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError(
                "the broker connection was closed: the channel cannot reach Redis any more"
            )
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]  # not in the stubs
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make kombu resolve ``redis`` and ``rediss`` to :class:`Transport` in this process (idempotent)."""
    for name in NAMES:
        kombu.transport.TRANSPORT_ALIASES[name] = TRANSPORT
        # kombu caches each name's class when it first resolves it: forget one resolved before this.
        kombu.transport._transport_cache.pop(name, None)  # type: ignore[attr-defined]
