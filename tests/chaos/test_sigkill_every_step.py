"""SIGKILL at every step: as a run reaches each step of its plan, the worker that is to execute it
(main process and pool child) is killed and a fresh one started. Whatever the kill interrupted (a
message not yet taken, taken but not acknowledged, an effect made but not committed, a commit whose
next message was never sent), the broker's redelivery and the overdue sweep (run here every 0.3 s,
as beat would) bring the run to SUCCESS exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fsm.plan import Step
from fsm.run import RunStatus
from tests.chaos.checks import assert_only_active
from tests.chaos.conftest import SHOP, ChaosStack
from tests.chaos.monitor import TWO_PRIMARIES, ZERO_SERVING

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

REDRIVE_EVERY = 0.3


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_sigkill_at_every_step(make_stack: Callable[..., ChaosStack], mode: str) -> None:
    # Unacknowledged messages come back after 3 s; an overdue run is re-sent after 1 s.
    stack = make_stack(visibility_timeout=3.0, redrive_after=1.0)
    # CONSISTENCY: planned downtime for the whole run. UPTIME: the target is promoted before the
    # source is demoted (two primaries by design, for the length of the run).
    window = ZERO_SERVING if mode == "CONSISTENCY" else TWO_PRIMARIES
    worker = stack.start_worker("w0")
    stack.monitor.open(window, f"the {mode} run")
    run_id = stack.submit(mode, "site-a", "site-b", f"{mode.lower()}-killed")
    planned = stack.store.load(run_id)
    assert planned is not None
    steps = [p.step for p in planned.plan if p.skip_reason is None]
    killed: list[Step] = []
    redriven = 0
    last_sweep = time.monotonic()
    deadline = time.monotonic() + 150
    while True:
        run = stack.store.load(run_id)
        assert run is not None
        if run.terminal:
            break
        assert time.monotonic() < deadline, f"run stuck at {run.state_name}: {run.dispatch}"
        step = run.dispatch.step if run.dispatch is not None else None
        if step is not None and step not in killed:
            worker.kill()
            killed.append(step)
            worker = stack.start_worker(f"w{len(killed)}", wait=False)
        if time.monotonic() - last_sweep > REDRIVE_EVERY:
            redriven += len(stack.engine.redrive())
            last_sweep = time.monotonic()
        time.sleep(0.003)
    stack.monitor.close(window, f"the {mode} run")

    assert run.status is RunStatus.SUCCESS, run.message
    assert killed == steps, f"killed at {[s.value for s in killed]}"
    assert [h.run_id for h in stack.history()] == [run_id]
    [record] = stack.history(run_id)
    assert record.outcome == "SUCCESS"
    assert stack.coordination.active_cluster(SHOP) == "site-b"
    assert stack.coordination.lock_info(SHOP) is None
    assert stack.coordination.divergence(SHOP) is None
    assert_only_active(stack.fleet, "site-b")
    time.sleep(0.3)
    stack.monitor.stop()
    assert stack.monitor.violations == [], stack.monitor.report()
    print(f"{mode}: {len(killed)} kills, {redriven} redrives, {stack.monitor.report()}")
