"""The HTTP layer of one sandbox cluster: a threading HTTP/1.1 server on 127.0.0.1.

Parses requests, applies latency, authenticates the bearer token against the cluster's
:class:`~sandbox.kube.identity.Users` (401 for an unknown one), serves discovery and /version, hands
resource requests with the caller's :class:`~sandbox.kube.identity.RequestContext` to
:class:`~sandbox.kube.api.ResourceApi`, and writes JSON responses (with Content-Length, so connections
stay alive, and any admission ``Warning`` headers) or chunked newline-delimited watch events. It
tracks open connections so that stopping (or taking the site "down") cuts them like a lost network
would, and it joins every handler thread on close. It must not implement REST
semantics or touch objects itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.kube import discovery, errors
from sandbox.kube.api import ResourceApi, Stream
from sandbox.kube.errors import ApiError
from sandbox.kube.faults import Dropped
from sandbox.kube.identity import RequestContext, Users

log = logging.getLogger(__name__)


class SandboxHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its connections so it can cut them all at once."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: ResourceApi, users: Users) -> None:
        self.api = api
        self.users = users
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, ApiRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut every open client connection down, so idle keep-alive and watch threads end now."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-response is normal (watch stop, site down); log, never print.
        log.debug("connection from %s ended with an error: %s", client_address, sys.exc_info()[1])

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class ApiRequestHandler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, closed after ``timeout`` seconds idle."""

    protocol_version = "HTTP/1.1"
    server_version = "sandbox-kube-apiserver"
    timeout = 30
    server: SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus delayed ACKs on a
        # kept-alive connection add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(
        self, code: int, body: Any, headers: dict[str, str] | None = None, warnings: list[str] | None = None
    ) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        for warning in warnings or []:  # RFC 7234 form, one header per warning, as kube-apiserver sends
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{escaped}"')
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, stream: Stream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in stream.events:
                data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            # The client closed the watch (Watch.stop(), timeout on its side): nothing left to send.
            self.close_connection = True
        if self.server.stopping.is_set():
            self.close_connection = True

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        context: RequestContext | None = None
        try:
            raw = self._read_body()
            latency = self.server.api.faults.latency
            if latency > 0:
                time.sleep(latency)
            user = self.server.users.authenticate(headers.get("authorization"))
            if user is None:
                raise errors.unauthorized()
            context = RequestContext(user)
            if self._non_resource(method, parts.path):
                return
            route = self.server.api.route(parts.path)
            if route is None:
                raise errors.path_not_found()
            self.server.api.authorize(method, route, query, context)
            result = self.server.api.handle(method, route, query, headers, raw, context=context)
            if isinstance(result, Stream):
                self._send_stream(result)
            else:
                self._send_json(result.code, result.body, result.headers, context.warnings)
        except ApiError as exc:
            self._send_json(exc.code, exc.status(), exc.headers, context.warnings if context else None)
        except Dropped as drop:
            self._drop(drop)
        except OSError:
            self.close_connection = True
        except Exception as exc:  # a bug in the sandbox must still answer like a server: 500
            log.exception("sandbox API server failed on %s %s", method, self.path)
            self._send_json(
                500, errors.ApiError(500, "InternalError", f"Internal error occurred: {exc}").status()
            )

    def _drop(self, drop: Dropped) -> None:
        """Carry out an injected timeout or reset: hold the request unanswered (released at once when
        the server stops or goes down), then cut the connection with a TCP reset."""
        if drop.hold > 0:
            self.server.stopping.wait(drop.hold)
        self.close_connection = True
        with contextlib.suppress(OSError):
            # SO_LINGER 0: close() sends RST instead of FIN, as a crashed proxy or server would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the reader holds a reference that would keep the socket open
            self.connection.close()

    def _non_resource(self, method: str, path: str) -> bool:
        """Serve discovery, /version and health endpoints; False when ``path`` is a resource path."""
        path = path.rstrip("/") or "/"
        registry = self.server.api.store.registry
        if path in ("/healthz", "/livez", "/readyz"):
            self._send_text(200, "ok")
            return True
        segs = [s for s in path.split("/") if s]
        doc: dict[str, Any] | None
        if path == "/version":
            doc = dict(discovery.SERVER_VERSION)
        elif path == "/":
            doc = {
                "paths": [
                    "/api",
                    "/api/v1",
                    "/apis",
                    "/healthz",
                    "/version",
                    *(f"/apis/{g}" for g in registry.groups()),
                ]
            }
        elif path == "/api":
            doc = discovery.api_versions(f"127.0.0.1:{self.server.port}")
        elif path == "/apis":
            doc = discovery.api_group_list(registry)
        elif path == "/openapi/v3":
            doc = discovery.openapi_v3_root(registry)
        elif segs[:2] == ["openapi", "v3"] and len(segs) in (4, 5):
            group, version = (
                ("", segs[3]) if segs[2] == "api" else (segs[3], segs[4] if len(segs) == 5 else "")
            )
            doc = discovery.openapi_v3_group_version(registry, group, version)
        elif segs[0] == "openapi":
            raise errors.path_not_found()  # no OpenAPI v2: kubectl uses v3 for what it needs
        elif len(segs) == 2 and segs[0] == "api":
            doc = discovery.api_resource_list(registry, "", segs[1])
        elif len(segs) == 2 and segs[0] == "apis":
            doc = discovery.api_group(registry, segs[1])
        elif len(segs) == 3 and segs[0] == "apis":
            doc = discovery.api_resource_list(registry, segs[1], segs[2])
        else:
            return False
        if method != "GET":
            raise errors.method_not_allowed()
        if doc is None:
            raise errors.path_not_found()
        self._send_json(200, doc)
        return True
