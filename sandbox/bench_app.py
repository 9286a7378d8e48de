"""The worker app for the benchmark: the product's tasks plus one bare task that enqueues itself.

``bench.hop`` is the baseline: the cheapest possible Celery hop on the same broker and settings
(receive, run a function, send the next message), with none of the engine's work.
"""

from __future__ import annotations

import time

import redis

from workers.settings import get_settings
from workers.tasks import app

__all__ = ["app", "hop"]


@app.task(name="bench.hop")
def hop(remaining: int, key: str) -> None:
    if remaining > 0:
        app.send_task("bench.hop", args=[remaining - 1, key], queue=get_settings().queue)
        return
    client = redis.Redis.from_url(get_settings().redis_url)
    client.set(key, repr(time.time()))
    client.close()
