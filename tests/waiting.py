"""Polling helpers shared by the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fsm.run import Run
from workers.store import RunStore


def wait_for_run(
    store: RunStore,
    run_id: str,
    done: Callable[[Run], bool],
    *,
    timeout: float = 60.0,
    logs: Iterable[Path] = (),
) -> Run:
    """The run once ``done(run)`` holds; on timeout, fail showing the run and the workers' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.load(run_id)
        if run is not None and done(run):
            return run
        time.sleep(0.05)
    tails = "\n".join(path.read_text()[-4000:] for path in logs)
    raise AssertionError(f"run {run_id} did not get there in {timeout}s: {store.load(run_id)}\n{tails}")
