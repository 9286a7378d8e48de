"""The machine's speed beside a benchmark's figures: a fixed workload timed alone and two at once.

This VM's speed drifts by 10-35 % over minutes, and not alike for one process and for two: in some
phases two busy processes each run slower than one alone (shared caches, the host's other tenants),
which a single-process reading does not show and which is what moves a 1 -> 2 worker speed-up. So
:func:`speed` times the same workload (JSON round trips, the stack's own kind of work) in this process
and then in two fresh processes started together, and reports both: the CPU milliseconds of one
(best of three) and the capacity of two at once, in processes' worth (2.0: two full cores).

This module imports nothing heavy: the two processes are spawned and import only it.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

_BODY = {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 3, "x": "y" * 64}}
_ROUNDS = 20_000


def unit() -> None:
    """One unit of the fixed workload (also :mod:`tests.benchmarks.site_chain`'s unit of CPU)."""
    json.loads(json.dumps(_BODY))


def _best_of_three() -> tuple[float, float]:
    """Milliseconds of the fixed workload, best of three: (CPU time, wall time)."""
    best_cpu = best_wall = float("inf")
    for _ in range(3):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(_ROUNDS):
            unit()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_cpu * 1000, best_wall * 1000


def _one_of_two(barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(_best_of_three()[1])


@dataclass(frozen=True)
class Speed:
    one_ms: float  # the fixed workload's CPU milliseconds in this process, alone
    two_at_once: float  # how many of those two processes running together amount to (2.0: no loss)


def speed() -> Speed:
    """The fixed workload alone, then in two spawned processes released together by a barrier."""
    one, alone_wall = _best_of_three()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_one_of_two, args=(barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    walls = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    return Speed(one, 2 * alone_wall / (sum(walls) / len(walls)))
