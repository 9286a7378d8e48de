"""A local DynamoDB for tests and the demo: moto's server mode on 127.0.0.1, spoken to over HTTP.

``moto_dynamodb()`` starts a :class:`moto.server.ThreadedMotoServer` on a free port, yields its endpoint
URL and stops it (closing the listening socket) on exit. ``dynamodb_client(endpoint_url)`` builds a
boto3 client for it with dummy credentials passed explicitly, so nothing leaks through ``os.environ``.

Differences from plain moto, all on purpose:
- Requests are served one at a time. Real DynamoDB applies every conditional write and transaction
  atomically; moto's in-memory backend does not (a cancelled transaction restores a copy of the whole
  table taken before it ran, undoing concurrent writes). Unserialised, 8 threads racing for 50 locks
  got two winners on some groups and "dictionary changed size during iteration" errors: the tests
  would check moto's races instead of our conditions.
- The dispatcher remembers which backend serves which host (moto lists its package on every request)
  and the per-request access log is off. Both rely on moto 5.x internals (``_server_entry``).
- botocore's own retries are off in the clients made here: the adapter retries by itself.

moto keeps its state per process, not per server: give every test its own table name.
Never imported by ``fsm``, ``workers`` or ``producers``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REGION = "us-east-1"
DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"  # moto accepts any credentials
# What a process (a worker, the CLI) needs in its environment to talk to moto with boto3's defaults.
AWS_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
}

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _OneRequestAtATime:
    """WSGI middleware serving one request at a time, so each DynamoDB call is atomic as on AWS.
    Counts calls by operation, and the seconds the backend spent on them (benchmarks report both)."""

    def __init__(self, app: _WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            # Count calls as AWS would bill them: by operation, whoever the client is.
            target = str(environ.get("HTTP_X_AMZ_TARGET", "")).rsplit(".", 1)[-1]
            started = time.perf_counter()
            # Materialise the body inside the lock: the backend may do its work while it is produced.
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                if target:
                    self.calls[target] += 1
                    self.seconds[target] += time.perf_counter() - started


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves which host."""

    def __init__(self) -> None:
        super().__init__(create_backend_app)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


class _QuietRequestHandler(MotoRequestHandler):
    """No access log line per request (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SerializedMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose requests are serialised and whose socket is closed on stop."""

    calls: collections.Counter[str]

    def _server_entry(self) -> None:
        app = _OneRequestAtATime(_Dispatcher())
        self.calls = app.calls
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=_QuietRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def stop(self) -> None:
        server = self._server
        super().stop()
        if server is not None:
            server.server_close()


@contextmanager
def moto_server(port: int = 0) -> Iterator[SerializedMotoServer]:
    """Run a moto server on 127.0.0.1 (a free port by default); yields it (``calls`` counts requests)."""
    server = SerializedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def endpoint_of(server: SerializedMotoServer) -> str:
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


@contextmanager
def moto_dynamodb(port: int = 0) -> Iterator[str]:
    """Run a moto server on 127.0.0.1 (a free port by default); yield ``http://127.0.0.1:<port>``."""
    with moto_server(port) as server:
        yield endpoint_of(server)


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
