"""Waits woken by watch events, end to end: a real Celery worker (production adapters), the watcher's
waker as its ServiceAccount on two sandbox clusters that enforce deploy/rbac, controllers that take
seconds to scale, promote and reconcile, Redis and moto.

With a polling countdown of 60 s (longer than any wait here could take if it was woken), every wait
that found its objects not ready is counted as woken (the registry's record of attempts started by
a wake, ``workers.wait_store``); with the waker stopped the same run still completes by polling.
"""

from __future__ import annotations

from typing import Any

import pytest

from fsm.plan import Timing
from fsm.run import Run, RunStatus
from tests.autofailover.conftest import CONTROLLERS, TIMING, World
from tests.factories import failover
from tests.waiting import wait_for_run
from workers.wait_store import RedisWaits

pytestmark = [pytest.mark.e2e]

LONG_POLL = Timing(
    poll_initial=60.0,
    poll_factor=1.0,
    poll_max=60.0,
    retry_initial=0.1,
    retry_max=0.5,
    effect_timeout=90,
    wait_timeout=90,
    coordination_timeout=20,
)


@pytest.fixture
def controllers() -> dict[str, Any]:
    # Slow enough that every wait finds its objects not ready at its first check.
    return {**CONTROLLERS, "workload_delay": 2.0, "volume_delay": 2.0, "flux_delay": 1.0}


@pytest.fixture
def timing(request: pytest.FixtureRequest) -> Timing:
    return getattr(request, "param", TIMING)


def run_one(world: World) -> Run:
    group = world.group()
    submission = world.orchestrator.submit(failover(mode="CONSISTENCY", target="site-b"), group)
    store = world.orchestrator.store
    return wait_for_run(
        store, submission.run.run_id, lambda r: r.terminal, timeout=150, logs=[world.worker.log_path]
    )


def waited(run: Run) -> set[str]:
    """The wait steps that found their objects not ready at least once."""
    return {key for key, record in run.steps.items() if key.startswith("wait_") and record.checks > 0}


@pytest.mark.parametrize("timing", [LONG_POLL], indirect=True)
def test_waits_are_woken_by_watch_events_not_by_their_countdown(world: World) -> None:
    run = run_one(world)
    assert run.status is RunStatus.SUCCESS, (run.message, world.worker_log())
    waits = RedisWaits(world.orchestrator.store.client, prefix=world.orchestrator.store.prefix)
    woken = waits.woken(run.run_id)
    object_waits = waited(run) - {"wait_volumes_released"}  # a DynamoDB record: no watch
    assert {"wait_scaled_down", "wait_ready"} <= object_waits, run.steps
    # Each wait that found its objects not ready was re-checked by a wake, never by its 60 s countdown.
    assert object_waits <= set(woken), (woken, run.steps)
    assert all(run.steps[key].checks == woken[key] for key in object_waits), (woken, run.steps)
    assert sum(stats.wakes for stats in world.waker.stats.values()) >= len(object_waits)
    # Nothing of the wait registrations is left once the run is over.
    assert not list(world.orchestrator.store.client.scan_iter(f"{waits.prefix}waitrun:*"))


def test_with_the_waker_stopped_waits_complete_by_polling(world: World) -> None:
    world.waker.stop()
    run = run_one(world)
    assert run.status is RunStatus.SUCCESS, (run.message, world.worker_log())
    assert waited(run) - {"wait_volumes_released"}, run.steps  # the waits did wait, and were polled
    waits = RedisWaits(world.orchestrator.store.client, prefix=world.orchestrator.store.prefix)
    assert waits.woken(run.run_id) == {}
