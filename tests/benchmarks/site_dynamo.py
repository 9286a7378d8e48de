"""The benchmark's DynamoDB stand-in: moto's server in a process of its own, counting calls.

``python -m tests.benchmarks.site_dynamo [--stock]`` serves moto's DynamoDB on a free port of
127.0.0.1 (one request at a time, as :mod:`sandbox.dynamo` does, so each call is atomic; over HTTP/1.1
connections kept alive, as DynamoDB keeps its clients' connections: :class:`_KeepAliveHandler`),
prints one JSON line ``{"port": ...}`` and serves until its standard input closes. ``GET /__calls``
answers the calls served so far by operation, with the seconds the backend spent on them.

moto's ``TransactWriteItems`` deep-copies every table it touches before it runs, to restore it if the
transaction is cancelled: with a site's worth of groups that is tens of milliseconds per call (the
issue measured 58 ms), and the benchmark would measure moto. Unless ``--stock``, the backend is
patched here, in this process only: a transaction first evaluates every condition without writing
(moto serves one request at a time, so nothing changes in between), then applies its writes, keeping
copies of only the items it writes to put them back should a write fail. Same outcome for every
transaction, the cost of the items it names.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from moto.core.exceptions import JsonRESTError
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.iam.models import get_account_id_from

from sandbox.dynamo import REGION, _Dispatcher, _OneRequestAtATime


def _key_of(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def _check(backend: DynamoDBBackend, items: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every item's condition against the table as it is: the (operation, key) pairs, or cancelled."""
    seen: set[tuple[str, str]] = set()
    errors: list[tuple[str | None, str | None, Any]] = []
    planned = []
    for item in items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        key = _key_of(backend, op_type, op)
        unique = (str(op["TableName"]), str(dict(sorted(key.items()))))
        if unique in seen:
            raise MultipleTransactionsException()
        seen.add(unique)
        current = backend.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        failed = False
        if condition is not None:
            expr = get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            )
            failed = not expr.expr(current)
        if failed:
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            errors.append(("ConditionalCheckFailed", str(ConditionalCheckFailed(item=old).message), old))
        else:
            errors.append((None, None, None))
        planned.append((op_type, op, key))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)
    return planned


def _apply(backend: DynamoDBBackend, planned: list[Any]) -> None:
    saved = []
    try:
        for op_type, op, key in planned:
            name = op["TableName"]
            before = backend.get_item(name, key)
            saved.append((name, key, copy.deepcopy(before.to_json()["Attributes"]) if before else None))
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                backend.put_item(name, op["Item"], expression_attribute_names=names)
            elif op_type == "Delete":
                backend.delete_item(name, key)
            elif op_type == "Update":
                backend.update_item(
                    name,
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
    except Exception:
        for name, key, attrs in reversed(saved):
            if attrs is None:
                backend.delete_item(name, key)
            else:
                backend.put_item(name, attrs)
        raise


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    _apply(self, _check(self, transact_items))


class _KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 with keep-alive, as DynamoDB serves its clients.

    werkzeug's server (moto's) answers every request with ``Connection: close``, and drains what the
    client sends within 10 ms after an answer, so it cannot keep a connection: every DynamoDB call
    paid a TCP connection and a server thread, on both sides of the socket (a tenth of the stand-in's
    CPU at 300 groups), which a client of DynamoDB does not. Here each request's body is read whole
    before the application runs, and each answer carries its length, so the stream always stands at
    the next request line."""

    protocol_version = "HTTP/1.1"

    def handle(self) -> None:
        # http.server's loop: one request after another until the client (or an error) closes.
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline or len(self.raw_requestline) > 65536:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        environ = self.get_environ()
        length = int(self.headers.get("Content-Length") or 0)
        environ.update(
            {
                "wsgi.input": io.BytesIO(self.rfile.read(length) if length else b""),
                "wsgi.errors": sys.stderr,
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
        )
        answered: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answered[:] = [status, headers]
            return lambda _data: None

        app = self.server.get_app()  # type: ignore[attr-defined]
        try:
            body = b"".join(app(environ, start_response))
            status, headers = answered
        except Exception as error:  # a 500 that says why, as werkzeug would, and a fresh connection
            body, status, headers = repr(error).encode(), "500 Internal Server Error", []
            self.close_connection = True
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
        lines.append(f"Content-Length: {len(body)}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per connection (not per request), counting the connections it accepted."""

    daemon_threads = True
    connections = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


def serve(app: Callable[..., Iterable[bytes]]) -> _Server:
    """A keep-alive server of ``app`` on a free port of 127.0.0.1 (not started: ``serve_forever``)."""
    server = _Server(("127.0.0.1", 0), _KeepAliveHandler)
    server.set_app(app)
    return server


class _Counted(_OneRequestAtATime):
    """One request at a time, calls and backend seconds counted by operation, and ``GET /__calls``."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/__calls":
            with self._lock:
                body = json.dumps({"calls": dict(self.calls), "seconds": dict(self.seconds)}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        return super().__call__(environ, start_response)


# The operations a worker sends on every step, served by moto's own handler methods called directly.
_DIRECT = {
    "GetItem": "get_item",
    "PutItem": "put_item",
    "UpdateItem": "update_item",
    "DeleteItem": "delete_item",
    "BatchGetItem": "batch_get_item",
    "TransactWriteItems": "transact_write_items",
    "Query": "query",
}
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


class _Direct:
    """moto's DynamoDB without its web framework for the operations of :data:`_DIRECT`.

    moto's server spends most of a call outside the backend: Flask's dispatch, its request set-up, a
    method lookup by ``inspect.getmembers`` and a response serializer driven by botocore's model
    (5-6 ms a call here, a third of a core at 1,000 groups, competing with the workers for the two
    cores). For those operations this calls the same ``DynamoHandler`` method with the request's JSON
    body as moto would (the JSON protocol's parameters are that body: the workers send no binary or
    timestamp attributes), and answers its result or its error as JSON, as DynamoDB does. Every
    other request (CreateTable, DescribeTable, the TTL calls) goes through moto's whole server.
    ``tests/dynamo/test_site_dynamo_direct.py`` checks that both answer the same."""

    def __init__(self, fallback: Callable[..., Iterable[bytes]]) -> None:
        self._fallback = fallback
        self._accounts: dict[str, str] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = _DIRECT.get(str(environ.get("HTTP_X_AMZ_TARGET", "")).rsplit(".", 1)[-1])
        if method is None or environ.get("REQUEST_METHOD") != "POST":
            return self._fallback(environ, start_response)
        handler = DynamoHandler()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        handler.body = handler.params = json.loads(environ["wsgi.input"].read(length) or b"{}")
        handler.region, handler.current_account = self._scope(str(environ.get("HTTP_AUTHORIZATION", "")))
        try:
            status, headers, body = 200, [], json.dumps(getattr(handler, method)().result)
        except JsonRESTError as error:
            status, headers, body = error.code, list(error.get_headers() or []), error.description
        payload = body.encode()
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
        # A length, or the server closes the connection after each answer (HTTP/1.1 keep-alive).
        headers += [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(payload)))]
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [payload]

    def _scope(self, authorization: str) -> tuple[str, str]:
        """Region and account as moto derives them: the credential scope, the access key's account."""
        credential = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
        region = credential[2] if len(credential) > 2 else REGION
        key = credential[0]
        if key not in self._accounts:
            self._accounts[key] = os.environ.get("MOTO_ACCOUNT_ID") or get_account_id_from(key)
        return region, self._accounts[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", action="store_true", help="moto's own TransactWriteItems")
    parser.add_argument("--whole", action="store_true", help="every call through moto's whole server")
    args = parser.parse_args()
    if not args.stock:
        DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    server = serve(_Counted(_Dispatcher() if args.whole else _Direct(_Dispatcher())))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_port}), flush=True)
    sys.stdin.read()  # until the parent closes it
    sys.stdout.flush()
    os._exit(0)  # a stand-in: nothing to save, and no waiting for clients' keep-alive connections


if __name__ == "__main__":
    main()
