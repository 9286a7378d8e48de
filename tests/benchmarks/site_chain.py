"""How far this machine lets a chain of a step's shape scale from one worker to two, with no product
code in it: a reference for the 1 -> 2 worker speed-up of ``bench_site``.

A step of the real stack is a chain of request/answer hops between single-threaded processes: the
worker's main process takes a message from Redis and hands it to its pool process over a pipe; the
pool process works, asks Redis, asks a sandbox cluster, asks the other one, asks the DynamoDB
stand-in, asks Redis again, working between the requests, and hands the result back; the main process
acknowledges it. The two workers' chains share the servers. Every hop is a wake-up of another process:
on a VM that packs woken processes onto a busy virtual CPU, or wakes an idle one late, cores sit idle
between the hops whatever the processes do.

:func:`chain` plays that shape on real processes and loopback TCP, in milliseconds of CPU per step
message as ``bench_site`` measured the stack's processes on 2026-12-06 (pool process 8.0, main process
2.1, the two sandbox clusters 2.6, the stand-in 1.7, Redis 0.55), rounded to whole requests: the pool
process makes five (Redis 0.08 ms, site-a 1.1, site-b 1.1, the stand-in 1.7, Redis 0.08; the real one
makes about nine: 2.4 Kubernetes requests, 1.05 DynamoDB calls, 3-4 Redis round trips), the main
process two (Redis 0.08 ms each). Four servers (``site-a``, ``site-b``, ``dynamodb``, ``redis``), each
a single-threaded process answering every client in turn, and one or two workers of two processes
each: a main process and a pool process joined by a socket pair. The main process takes the next
message while the pool works (Celery's prefetch); its acknowledgement and that request to Redis come
after the pool's result and before the next job, as with ``task_acks_late``. Every unit of work is
:func:`tests.benchmarks.site_machine.unit`, so it slows with the machine.

It runs one worker, then two, then one and two again (the machine drifts over minutes) on the same
servers, each phase for ``seconds`` once every process is connected, and reports each phase's
messages per second and cores used (the chain's processes' CPU over the wall time, as ``bench_site``
counts the stack's), and the best two-worker rate over the best one-worker rate. :data:`ONE_HOP` does
the same CPU with one request a message by the pool process, to each server in turn: how much of
what two workers leave idle the hops themselves cost.

Spawned processes import this module (and, under ``bench_site``, the benchmark's own imports, before
they report ready).
"""

from __future__ import annotations

import multiprocessing
import selectors
import socket
import struct
import time
from dataclasses import asdict, dataclass
from typing import Any

from sandbox.kube.process import cpu_seconds_of
from tests.benchmarks.site_machine import unit

_UNITS_PER_MS = 200  # units of work per millisecond of CPU, about, on this machine (5 us each)

# One step message, in milliseconds of CPU, as bench_site measured the stack's processes.
_MAIN_TAKE, _MAIN_ACK = 1.05, 1.05  # the worker's main process: receive (+ broker bookkeeping), ack
_MAIN_REDIS = 0.08  # the main process's two requests to Redis: the next message's fetch, the ack
# One step message of the pool process: (its CPU before a request, the server asked, the server's CPU
# for it). A shape is one or more of them, taken in turn, one per message.
Hop = tuple[float, str, float]
Message = tuple[Hop, ...]
SITE: tuple[Message, ...] = (
    (
        (1.6, "redis", 0.08),
        (1.6, "site-a", 1.1),
        (1.6, "site-b", 1.1),
        (1.6, "dynamodb", 1.7),
        (1.6, "redis", 0.08),
    ),
)
# The same CPU, the pool process asking one server once per message, each server in turn.
ONE_HOP: tuple[Message, ...] = tuple(((8.0, name, 4.06),) for name in ("site-a", "site-b", "dynamodb"))
_SERVERS = ("site-a", "site-b", "dynamodb", "redis")
_HEADER = struct.Struct("!d")


def _work(ms: float) -> None:
    for _ in range(int(ms * _UNITS_PER_MS)):
        unit()


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
                _work(ms)
                sock.sendall(b"k")
            except OSError:  # ConnectionError included: a client gone
                selector.unregister(sock)
                sock.close()


def _connect(ports: dict[str, int]) -> dict[str, socket.socket]:
    socks = {}
    for name, port in ports.items():
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[name] = sock
    return socks


def _pool(ports: dict[str, int], pipe: socket.socket, ready: Any, shape: tuple[Message, ...]) -> None:
    socks = _connect(ports)
    ready.put(True)
    sent = 0
    while _recv_exact(pipe, 1) == b"j":
        for ms, server, cost in shape[sent % len(shape)]:
            _work(ms)
            _ask(socks[server], cost)
        sent += 1
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
    _ask(redis, _MAIN_REDIS)
    _work(_MAIN_TAKE)
    while time.monotonic() < signals.stop_at.value:
        pipe.sendall(b"j")
        _ask(redis, _MAIN_REDIS)  # the next message, fetched while the pool works
        _work(_MAIN_TAKE)
        _recv_exact(pipe, 1)
        _work(_MAIN_ACK)
        _ask(redis, _MAIN_REDIS)  # the acknowledgement, before the next job
        messages += 1
    pipe.sendall(b"q")
    signals.done.put(messages)


@dataclass(frozen=True)
class Phase:
    """One phase: how many workers, what they did, the cores the chain's processes used."""

    workers: int
    per_second: float  # step messages per second
    cores_used: float  # the chain's processes' CPU seconds over the phase's wall time


@dataclass(frozen=True)
class Chain:
    """The phases of one shape: one worker, two, one, two."""

    phases: tuple[Phase, ...]
    hops: int  # requests the pool process makes per message

    def speed_up(self) -> float:
        """Two workers' best rate over one worker's best rate."""
        best = {n: max(p.per_second for p in self.phases if p.workers == n) for n in (1, 2)}
        return best[2] / best[1]

    def at_equal_cpu(self) -> float:
        """The cores two workers kept busy over those one worker did (means over the phases): the
        speed-up had a message cost the same CPU in every phase, as bench_site's own figure."""
        mean = {
            n: sum(p.cores_used for p in self.phases if p.workers == n)
            / sum(1 for p in self.phases if p.workers == n)
            for n in (1, 2)
        }
        return mean[2] / mean[1]

    def figures(self) -> dict[str, Any]:
        """For bench_site's JSON."""
        return {
            "hops": self.hops,
            "speed_up": self.speed_up(),
            "at_equal_cpu": self.at_equal_cpu(),
            "phases": [asdict(p) for p in self.phases],
        }

    def describe(self) -> str:
        by = {n: [p for p in self.phases if p.workers == n] for n in (1, 2)}
        rates = {n: "/".join(f"{p.per_second:.0f}" for p in ps) for n, ps in by.items()}
        cores = {n: "/".join(f"{p.cores_used:.2f}" for p in ps) for n, ps in by.items()}
        return (
            f"1 -> 2 workers {self.speed_up():.2f}x, {self.at_equal_cpu():.2f}x at equal CPU ({rates[1]} -> "
            f"{rates[2]} messages/s, cores used {cores[1]} -> {cores[2]})"
        )


@dataclass(frozen=True)
class _Servers:
    ports: dict[str, int]  # by server name
    pids: list[int]


def _phase(
    context: Any, servers: _Servers, workers: int, seconds: float, shape: tuple[Message, ...]
) -> Phase:
    """``workers`` workers, every one of their processes started and connected before the clock starts;
    every process it starts is stopped before it returns, whatever happens."""
    signals = _Signals(context.Queue(), context.Event(), context.Value("d", 0.0), context.Queue())
    processes = []
    try:
        for _ in range(workers):
            main_end, pool_end = socket.socketpair()
            with main_end, pool_end:  # the children hold their own ends; a dead peer then shows as EOF
                pool = context.Process(
                    target=_pool, args=(servers.ports, pool_end, signals.ready, shape), daemon=True
                )
                main = context.Process(target=_main, args=(servers.ports, main_end, signals), daemon=True)
                processes += [pool, main]
                pool.start()
                main.start()
        for _ in processes:
            signals.ready.get(timeout=60)
        pids = servers.pids + [p.pid for p in processes if p.pid is not None]
        cpu = sum(cpu_seconds_of(pid) for pid in pids)
        started = time.monotonic()
        signals.stop_at.value = started + seconds
        signals.go.set()
        messages = sum(signals.done.get(timeout=seconds + 60) for _ in range(workers))
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds_of(pid) for pid in pids) - cpu
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    return Phase(workers, messages / elapsed, cpu / elapsed)


def chain(seconds: float = 6.0, shape: tuple[Message, ...] = SITE) -> Chain:
    """One worker, two, one, two: each for ``seconds`` (> 0), on the same four servers, the pool
    process making the requests of ``shape`` (:data:`SITE`, or :data:`ONE_HOP`)."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
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
        running = _Servers(ports, [s.pid for s in servers if s.pid is not None])
        phases = tuple(_phase(context, running, n, seconds, shape) for n in (1, 2, 1, 2))
    finally:
        for server in servers:
            server.kill()
            server.join(timeout=10)
        for listener in listeners:
            listener.close()
    return Chain(phases, len(shape[0]))


def describe(site: Chain, one_hop: Chain | None = None) -> str:
    """Both chains in one line, for bench_site's targets."""
    text = f"a chain of the site's shape, no product code, {site.hops} requests a message: {site.describe()}"
    if one_hop is not None:
        text += f"; the same CPU in {one_hop.hops} request a message: {one_hop.describe()}"
    return text


if __name__ == "__main__":
    print(describe(chain(), chain(shape=ONE_HOP)))
