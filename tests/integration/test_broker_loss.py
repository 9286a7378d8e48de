"""A worker survives its broker restarting while it holds a reserved message (workers/broker.py).

Before the repair, kombu 5.7's Redis channel raised AttributeError while closing the lost connection
(it tried to give the reserved message back through a transport already detached), Celery called it
unrecoverable and the worker exited: the chaos test that restarts Redis during a wait step lost both
its workers now and then (CI, 2026-12-06). Here the race is made certain: the worker holds a
countdown message, waiting in BRPOP, when Redis is killed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from sandbox.celery_worker import WorkerProcess
from sandbox.redis_server import OwnRedis
from tests.chaos.checks import eventually
from workers.app import create_app
from workers.broker import Transport
from workers.settings import Settings

pytestmark = [pytest.mark.e2e]

QUEUE = "broker-loss"


def test_a_worker_holding_a_countdown_message_survives_redis_restarting(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.touch()
    env = {"BROKER_LOSS_URL": own_redis.url, "BROKER_LOSS_NOTES": str(notes), "FAILOVER_LOG_LEVEL": "INFO"}
    worker = WorkerProcess(
        env,
        name="survivor",
        queues=QUEUE,
        log_path=tmp_path / "worker.log",
        app="tests.integration.broker_loss_app",
    )
    app = create_app(Settings(redis_url=own_redis.url, queue=QUEUE))
    try:
        worker.wait_ready()
        app.send_task("broker_loss.note", args=["first"], queue=QUEUE)
        eventually(lambda: notes.read_text() == "first\n", "the worker ran the first message")
        # A countdown message: the worker reserves it at once and holds it, unacknowledged, till due.
        app.send_task("broker_loss.note", args=["held"], queue=QUEUE, countdown=600)
        broker = redis.Redis.from_url(own_redis.url)
        eventually(lambda: broker.hlen("unacked") == 1, "the countdown message reserved (unacked)")
        broker.close()
        time.sleep(0.5)  # back in BRPOP, where the consumer waits when it has nothing to run

        own_redis.kill()
        eventually(lambda: b"Connection to broker lost" in _log(worker), "the worker noticed the loss")
        time.sleep(1.0)
        assert worker.process.poll() is None, _log(worker).decode()[-3000:]
        own_redis.start()  # the same port, empty: the held message is gone with it

        app.send_task("broker_loss.note", args=["after"], queue=QUEUE)

        def ran_after() -> bool:
            assert worker.process.poll() is None, f"the worker exited: {_log(worker).decode()[-3000:]}"
            return notes.read_text() == "first\nafter\n"

        eventually(ran_after, "the worker ran a message sent after the restart")
        assert b"Unrecoverable error" not in _log(worker)
    finally:
        app.close()
        worker.stop()


def _log(worker: WorkerProcess) -> bytes:
    return worker.log_path.read_bytes()


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:**@127.0.0.1:6379/0"),
        (
            "rediss://failover:s3cret@redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.crt",
            "rediss://failover:**@redis.example:6380/0",
        ),
    ],
)
def test_the_apps_redis_brokers_use_the_repaired_transport_under_kombus_own_names(url: str, uri: str) -> None:
    """Only the class changes: the transport's name (so the URI in logs and Flower, and kombu's
    handling of ``rediss``) stays kombu's."""
    app = create_app(Settings(redis_url=url))
    try:
        connection = app.connection_for_write()
        assert type(connection.transport) is Transport
        assert connection.transport_cls == url.partition("://")[0]
        assert connection.as_uri() == uri
    finally:
        app.close()
