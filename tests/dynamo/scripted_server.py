"""A stand-in DynamoDB endpoint that answers from a script: to provoke throttling and 5xx on demand.

Each request takes the next scripted reply (HTTP status and JSON body, in DynamoDB's wire format);
when the script is used up every request gets ``200 {}`` (an empty GetItem/PutItem answer).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"


Reply = tuple[int, dict[str, Any]]


def error(code: str, message: str = "scripted failure", status: int = 400, **extra: Any) -> Reply:
    return status, {"__type": f"{ERROR_PREFIX}{code}", "message": message, **extra}


class ScriptedDynamo:
    def __init__(self, replies: list[Reply]) -> None:
        self.replies = deque(replies)
        self.targets: list[str] = []  # X-Amz-Target of every request, e.g. DynamoDB_20120810.GetItem
        self._lock = threading.Lock()

    def next_reply(self, target: str) -> Reply:
        with self._lock:
            self.targets.append(target)
            return self.replies.popleft() if self.replies else (200, {})


@contextmanager
def scripted_dynamo(replies: list[Reply], *, port: int = 0) -> Iterator[tuple[str, ScriptedDynamo]]:
    """Serve ``replies`` on 127.0.0.1 (``port``, or a free one); yields the endpoint URL and the script
    (to inspect requests)."""
    script = ScriptedDynamo(replies)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, body = script.next_reply(self.headers.get("X-Amz-Target", ""))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
