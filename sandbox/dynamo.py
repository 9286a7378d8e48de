"""A local DynamoDB for tests and the demo: moto's server mode on 127.0.0.1, spoken to over HTTP.

``moto_dynamodb()`` starts a :class:`moto.server.ThreadedMotoServer` on a free port, yields its endpoint
URL and stops it (closing the listening socket) on exit. ``dynamodb_client(endpoint_url)`` builds a
boto3 client for it with dummy credentials passed explicitly, so nothing leaks through ``os.environ``.

Two differences from plain moto, both on purpose:
- Requests are served one at a time. Real DynamoDB applies every conditional write and transaction
  atomically; moto's in-memory backend does not (a cancelled transaction restores a copy of the whole
  table taken before it ran, undoing concurrent writes), so concurrency tests would otherwise test
  moto's races instead of our conditions.
- botocore's own retries are off in the clients made here: the adapter retries by itself.

moto keeps its state per process, not per server: give every test its own table name.
Never imported by ``fsm``, ``workers`` or ``producers``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from moto.server import DomainDispatcherApplication, MotoRequestHandler, ThreadedMotoServer, create_backend_app
from werkzeug.serving import make_server

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REGION = "us-east-1"
DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"  # noqa: S105 - moto accepts any credentials

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _OneRequestAtATime:
    """WSGI middleware serving one request at a time, so each DynamoDB call is atomic as on AWS."""

    def __init__(self, app: _WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            # Materialise the body inside the lock: the backend may do its work while it is produced.
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


class SerializedMotoServer(ThreadedMotoServer):  # type: ignore[misc]
    """ThreadedMotoServer whose requests are serialised and whose socket is closed on stop."""

    def _server_entry(self) -> None:
        app = _OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def stop(self) -> None:
        server = self._server
        super().stop()
        if server is not None:
            server.server_close()


@contextmanager
def moto_dynamodb(port: int = 0) -> Iterator[str]:
    """Run a moto server on 127.0.0.1 (a free port by default); yield ``http://127.0.0.1:<port>``."""
    server = SerializedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound_port = server.get_host_and_port()
        yield f"http://{host}:{bound_port}"
    finally:
        server.stop()


def dynamodb_client(endpoint_url: str, *, region_name: str = REGION, timeout: float = 5.0) -> DynamoDBClient:
    """A DynamoDB client for ``endpoint_url`` with dummy credentials and botocore retries off.

    The caller closes it (``client.close()``).
    """
    session = boto3.session.Session(
        aws_access_key_id=DUMMY_ACCESS_KEY,
        aws_secret_access_key=DUMMY_SECRET_KEY,
        region_name=region_name,
    )
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    return session.client("dynamodb", endpoint_url=endpoint_url, config=config)
