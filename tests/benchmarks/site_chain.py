"""How far this machine lets a chain of the site's shape scale from one worker to two, with no product
code in it: the ceiling a 1 -> 2 worker speed-up is measured against.

A step of the real stack is a chain of request/answer hops between single-threaded processes: the
worker's main process takes a message from Redis and hands it to its pool process over a pipe; the
pool process works, asks a sandbox cluster, works, asks the other cluster, works, asks the DynamoDB
stand-in, works, asks Redis, and hands the result back; the main process acknowledges it. The two
workers' chains share the servers. On a machine whose scheduler runs every runnable process whenever
a core is free, two such workers reach nearly the cores the work needs; on a VM that packs woken
processes onto a busy virtual CPU, or wakes an idle one late, cores sit idle between the hops, and
no change to the product's code can win that back.

:func:`chain` plays that shape with the stack's own proportions (CPU per step message measured by
``bench_site`` on 2026-12-06: pool process 8.0 ms, main process 2.1 ms, the two sandbox clusters
2.6 ms over 2.4 requests, the stand-in 1.7 ms over 1.05 calls, Redis 0.55 ms over 7 round trips) on
real processes and loopback TCP: three servers (``site-a``, ``site-b``, ``dynamodb``) and a
``redis`` one, each a single-threaded process answering every client in turn, and one or two workers
of two processes each (a main process and a pool process joined by a socket pair, the main process
taking the next message while the pool works, as Celery's prefork pool with prefetch does). Every
unit of work is the same JSON round trip as :mod:`tests.benchmarks.site_machine`'s fixed workload, so
it slows with the machine. It runs one worker, then two, then one and two again (the machine drifts
over minutes), each for ``seconds``, and reports the messages per second and the cores used (read
off ``/proc/stat``) of each, and the speed-up of the better pair. :data:`ONE_HOP` is the same CPU in
every process with the pool process asking one server once per message: how much of what two workers
leave idle the hops themselves cost.

This module imports nothing heavy: the processes are spawned and import only it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import selectors
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

_BODY = {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 3, "x": "y" * 64}}
_UNITS_PER_MS = 200  # JSON round trips per millisecond of CPU, about, on this machine (5 us each)

# One step message, in milliseconds of CPU, as bench_site measured the stack's processes.
_MAIN_TAKE, _MAIN_ACK = 1.05, 1.05  # the worker's main process: receive (+ broker bookkeeping), ack
# The pool process: (its CPU before a request, the server asked, the server's CPU for it).
Hop = tuple[float, str, float]
SITE: tuple[Hop, ...] = (
    (1.6, "redis", 0.08),
    (1.6, "site-a", 1.1),
    (1.6, "site-b", 1.1),
    (1.6, "dynamodb", 1.7),
    (1.6, "redis", 0.08),
)
# The same CPU in every process, with the pool process asking one server once per message.
ONE_HOP: tuple[Hop, ...] = ((8.0, "dynamodb", 4.06),)
_MAIN_HOPS = (("redis", 0.08), ("redis", 0.08))  # the main process: the message's fetch, its ack
_SERVERS = ("site-a", "site-b", "dynamodb", "redis")
_HEADER = struct.Struct("!d")


def _work(ms: float) -> None:
    for _ in range(int(ms * _UNITS_PER_MS)):
        json.loads(json.dumps(_BODY))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _ask(sock: socket.socket, ms: float) -> None:
    sock.sendall(_HEADER.pack(ms))
    _recv_exact(sock, 1)


def _serve(listener: socket.socket) -> None:
    """One single-threaded server: each request names the CPU it costs; answered in arrival order."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ)
                continue
            try:
                (ms,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
            except ConnectionError:
                selector.unregister(sock)
                sock.close()
                continue
            _work(ms)
            sock.sendall(b"k")


def _connect(ports: dict[str, int]) -> dict[str, socket.socket]:
    socks = {}
    for name, port in ports.items():
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[name] = sock
    return socks


def _pool(ports: dict[str, int], pipe: socket.socket, ready: Any, hops: tuple[Hop, ...]) -> None:
    socks = _connect(ports)
    ready.put(True)
    while _recv_exact(pipe, 1) == b"j":
        for ms, server, cost in hops:
            _work(ms)
            _ask(socks[server], cost)
        pipe.sendall(b"r")


@dataclass(frozen=True)
class _Signals:
    """Between the benchmark and its processes: who is connected, go, when to stop, what was done."""

    ready: Any
    go: Any
    stop_at: Any
    done: Any


def _main(ports: dict[str, int], pipe: socket.socket, signals: _Signals) -> None:
    """A worker's main process: keeps its pool process busy, taking the next message meanwhile."""
    redis = _connect({"redis": ports["redis"]})["redis"]
    messages = 0
    signals.ready.put(True)
    signals.go.wait()
    _ask(redis, _MAIN_HOPS[0][1])
    _work(_MAIN_TAKE)
    while time.monotonic() < signals.stop_at.value:
        pipe.sendall(b"j")
        _ask(redis, _MAIN_HOPS[0][1])  # the next message, fetched while the pool works
        _work(_MAIN_TAKE)
        _recv_exact(pipe, 1)
        _work(_MAIN_ACK)
        _ask(redis, _MAIN_HOPS[1][1])
        messages += 1
    pipe.sendall(b"q")
    signals.done.put(messages)


@dataclass(frozen=True)
class Phase:
    workers: int
    per_second: float  # step messages per second
    cores_used: float  # busy cores over the phase, whole machine (/proc/stat)


@dataclass(frozen=True)
class Chain:
    phases: tuple[Phase, ...]
    hops: int  # requests the pool process makes per message

    def speed_up(self) -> float:
        """Two workers' best rate over one worker's best rate."""
        best = {n: max(p.per_second for p in self.phases if p.workers == n) for n in (1, 2)}
        return best[2] / best[1]

    def describe(self) -> str:
        by = {n: [p for p in self.phases if p.workers == n] for n in (1, 2)}
        rates = {n: "/".join(f"{p.per_second:.0f}" for p in ps) for n, ps in by.items()}
        cores = {n: "/".join(f"{p.cores_used:.2f}" for p in ps) for n, ps in by.items()}
        return (
            f"1 -> 2 workers {self.speed_up():.2f}x ({rates[1]} -> {rates[2]} messages/s, cores used "
            f"{cores[1]} -> {cores[2]})"
        )


def _busy_and_total() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _phase(context: Any, ports: dict[str, int], workers: int, seconds: float, hops: tuple[Hop, ...]) -> Phase:
    """``workers`` workers, all started and connected before the clock starts."""
    signals = _Signals(context.Queue(), context.Event(), context.Value("d", 0.0), context.Queue())
    processes = []
    for _ in range(workers):
        main_end, pool_end = socket.socketpair()
        processes.append(
            context.Process(target=_pool, args=(ports, pool_end, signals.ready, hops), daemon=True)
        )
        processes.append(context.Process(target=_main, args=(ports, main_end, signals), daemon=True))
    for process in processes:
        process.start()
    for _ in processes:
        signals.ready.get(timeout=60)
    busy, total = _busy_and_total()
    started = time.monotonic()
    signals.stop_at.value = started + seconds
    signals.go.set()
    messages = sum(signals.done.get(timeout=seconds + 60) for _ in range(workers))
    elapsed = time.monotonic() - started
    busy_after, total_after = _busy_and_total()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    cores = (os.cpu_count() or 1) * (busy_after - busy) / max(1, total_after - total)
    return Phase(workers, messages / elapsed, cores)


def chain(seconds: float = 8.0, hops: tuple[Hop, ...] = SITE) -> Chain:
    """One worker, two, one, two: each for ``seconds``, on fresh servers, the pool process making
    ``hops`` (:data:`SITE`: the site's shape; :data:`ONE_HOP`: the same CPU in one request)."""
    context = multiprocessing.get_context("spawn")
    listeners, servers, ports = [], [], {}
    try:
        for name in _SERVERS:
            listener = socket.create_server(("127.0.0.1", 0))
            listeners.append(listener)
            ports[name] = listener.getsockname()[1]
            server = context.Process(target=_serve, args=(listener,), daemon=True)
            server.start()
            servers.append(server)
        for sock in _connect(ports).values():  # every server process up and serving
            _ask(sock, 0.0)
            sock.close()
        phases = tuple(_phase(context, ports, n, seconds, hops) for n in (1, 2, 1, 2))
    finally:
        for server in servers:
            server.kill()
            server.join(timeout=10)
        for listener in listeners:
            listener.close()
    return Chain(phases, len(hops))


def describe(site: Chain, one_hop: Chain | None = None) -> str:
    """Both chains in one line, for bench_site's targets."""
    text = f"a chain of the site's shape, no product code, {site.hops} requests a message: {site.describe()}"
    if one_hop is not None:
        text += f"; the same CPU in {one_hop.hops} request a message: {one_hop.describe()}"
    return text


if __name__ == "__main__":
    print(describe(chain(), chain(hops=ONE_HOP)))
