"""Failovers finish through a bad day on the Kubernetes side (issue 11): 20 % of API requests
answering 500/503/429 on both clusters, 20 % timing out, 5 % of every kind of fault.

Each scenario runs failovers back and forth (site-a -> site-b -> site-a ...) with real worker
processes and prints what it measured. ``FAILOVER_CHAOS_RUNS`` sets the runs per mode of the 5xx/429
scenario (CI default 3; the issue's figure is 20, measured with ``FAILOVER_CHAOS_RUNS=20``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from fsm.run import RunStatus
from tests.chaos_faults.conftest import ChaosStack
from tests.kube.invariants import InvariantMonitor

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

RUNS = int(os.environ.get("FAILOVER_CHAOS_RUNS", "3"))


def _run_back_and_forth(stack: ChaosStack, modes: list[str], *, monitor: bool = True) -> list[float]:
    """One run per entry of ``modes``, each from the current owner to the other site; returns their
    durations. Every run must succeed and keep its mode's invariants."""
    durations = []
    for mode in modes:
        source = stack.owner()
        target = "site-b" if source == "site-a" else "site-a"
        watcher = InvariantMonitor(stack.fleet[source], stack.fleet[target], mode, stack.group, interval=0.02)
        if monitor:
            watcher.start()
        started = time.monotonic()
        try:
            run = stack.wait_finished(stack.submit(mode), timeout=180)
        finally:
            if monitor:
                watcher.stop()
        durations.append(time.monotonic() - started)
        assert run.status is RunStatus.SUCCESS, f"{mode} {source}->{target}: {run.message}"
        assert watcher.violations == []
        assert stack.owner() == target
    return durations


def _report(title: str, stack: ChaosStack, modes: list[str], durations: list[float]) -> None:
    by_mode: dict[str, list[float]] = {}
    for mode, seconds in zip(modes, durations, strict=True):
        by_mode.setdefault(mode, []).append(seconds)
    print(f"\n[chaos] {title}")
    for mode, seconds in by_mode.items():
        print(
            f"[chaos]   {mode}: {len(seconds)} of {len(seconds)} runs finished; "
            f"{min(seconds):.1f}-{max(seconds):.1f}s per run (mean {sum(seconds) / len(seconds):.1f}s)"
        )
    print(
        f"[chaos]   faults injected {stack.injected()}; requests retried (kube.request_retry) "
        f"{stack.logged('kube.request_retry')}; step attempts that failed temporarily "
        f"{stack.logged('step.temporary_failure')}"
    )


@pytest.mark.timeout(120 + 30 * RUNS)
def test_20_percent_5xx_and_429_on_both_clusters_every_run_finishes(make_stack: Callable[..., Any]) -> None:
    with make_stack("errors") as stack:
        stack.start_worker()
        stack.set_faults(error_rate=0.2, error_codes=(500, 503, 429), retry_after=1)
        modes = ["CONSISTENCY", "UPTIME"] * RUNS
        durations = _run_back_and_forth(stack, modes)
        _report("20% of Kubernetes requests answer 500/503/429 on both clusters", stack, modes, durations)
        assert stack.logged("kube.request_retry") > 0


def test_20_percent_timeouts_on_both_clusters_the_run_finishes(make_stack: Callable[..., Any]) -> None:
    # Read timeout 1 s, requests held 1.5 s: a timed-out request costs about a second, as 15 s would
    # in production with 15 s read timeouts (the step deadlines of FAST timing are 30 s).
    with make_stack("timeouts", kube_read_timeout=1.0) as stack:
        stack.start_worker()
        stack.set_faults(timeout_rate=0.2, hold=1.5)
        modes = ["CONSISTENCY", "UPTIME"]
        durations = _run_back_and_forth(stack, modes)
        _report("20% of Kubernetes requests time out on both clusters", stack, modes, durations)
        assert stack.injected()["timeout"] > 0


def test_5_percent_of_every_fault_ten_runs_in_a_row(make_stack: Callable[..., Any]) -> None:
    with make_stack("mixed", kube_read_timeout=1.0) as stack:
        stack.start_worker()
        stack.set_faults(
            error_rate=0.02, error_codes=(500, 503, 429), timeout_rate=0.015, reset_rate=0.015, hold=1.5
        )
        modes = ["CONSISTENCY", "UPTIME"] * 5
        durations = _run_back_and_forth(stack, modes, monitor=False)
        _report("5% faults (5xx/429, timeouts, resets) on every request", stack, modes, durations)
