"""End to end through real Celery workers on a real Redis broker, against the port fakes."""

from __future__ import annotations

import json
import time

import pytest
import redis

from fsm.plan import Step
from fsm.run import RunStatus
from sandbox.fakes import FakeCoordination
from tests.e2e.conftest import Stack
from tests.factories import all_refs, group
from workers.app import create_app
from workers.engine import Engine
from workers.outbox import BrokerOutbox

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_a_failover_runs_to_success_through_a_real_worker(stack: Stack, mode: str) -> None:
    stack.start_worker("w1")
    run_id = stack.submit(mode)
    run = stack.wait_finished(run_id)
    assert run.status is RunStatus.SUCCESS, run.message
    g = group()
    assert stack.coordination.active_cluster(g.key) == "site-b"
    assert all(stack.clusters.role("site-b", ref) == "active" for ref in all_refs(g))
    assert all(stack.clusters.role("site-a", ref) == "passive" for ref in all_refs(g))
    # Waits were polled several times, each poll a new message, and finished.
    assert run.steps["wait_ready"].checks >= 3
    assert run.steps["wait_ready"].outcome == "done"
    # The fence raised on both clusters before anything else is no change to the group's objects.
    timeline = [e for e in stack.clusters.timeline() if e["op"] != "raise_fence"]
    assert stack.clusters.fence("site-a", g.key) == stack.clusters.fence("site-b", g.key) == run.token
    if mode == "CONSISTENCY":
        # Never two writers: the target's first change comes after the source's volumes are secondary.
        first_target = min(i for i, e in enumerate(timeline) if e["cluster"] == "site-b")
        demoted = max(
            i
            for i, e in enumerate(timeline)
            if e["cluster"] == "site-a" and e["kind"] == "VolumeReplication" and e["op"] == "reached"
        )
        assert demoted < first_target
    else:
        last_target = max(i for i, e in enumerate(timeline) if e["cluster"] == "site-b")
        first_source = min(i for i, e in enumerate(timeline) if e["cluster"] == "site-a")
        assert last_target < first_source


def test_a_failing_step_ends_the_run_with_its_name(stack: Stack) -> None:
    g = group()
    stack.clusters.set_fault("make_active", "site-b", g.workload_refs()[2], "forbidden")
    stack.start_worker("w1")
    run = stack.wait_finished(stack.submit())
    assert run.status is RunStatus.FAILED
    assert run.failure is not None and run.failure.step.value == "scale_up_workloads"
    assert run.message == (
        "failed at step scale_up_workloads, cluster 'site-b', Deployment shop/web: Deployment shop/web on "
        "cluster 'site-b': cannot make_active Deployment: forbidden by RBAC; past the point of no return "
        "(promote_volumes): nothing is undone and the group is diverged; settle it with "
        "`failoverctl group resolve shop/shop --active CLUSTER --reason TEXT`"
    )
    assert stack.coordination.active_cluster(g.key) == "site-a"
    divergence = stack.coordination.divergence(g.key)
    assert divergence is not None and divergence.step == "scale_up_workloads"
    [record] = stack.coordination.history(g.key)
    assert (record.outcome, record.failed_step) == ("FAILED", "scale_up_workloads")


def test_the_same_step_message_delivered_twice_advances_the_run_once(stack: Stack) -> None:
    stack.start_worker("w1")
    run_id = stack.submit()
    run = stack.wait_for(run_id, lambda r: r.state is Step.WAIT_SCALED_DOWN)
    # Deliver copies of messages the run already consumed, through the broker, while it is running.
    for _ in range(3):
        stack.engine.sender.send("failover.validate", run_id, 1, countdown=0.0, cluster=None)
        stack.engine.sender.send("failover.acquire_lock", run_id, 2, countdown=0.0, cluster=None)
    run = stack.wait_finished(run_id)
    assert run.status is RunStatus.SUCCESS
    assert run.steps["validate"].attempts == 1
    assert run.steps["acquire_lock"].attempts == 1
    assert isinstance(stack.coordination, FakeCoordination)
    assert stack.coordination.calls()["acquire_lock"] == 1


def test_a_worker_killed_mid_run_is_replaced_and_the_run_finishes(stack: Stack) -> None:
    first = stack.start_worker("w1", FAILOVER_FAKE_SETTLE_CHECKS="12")
    run_id = stack.submit()
    stack.wait_for(run_id, lambda r: r.state is Step.WAIT_SCALED_DOWN)
    first.kill()
    stuck = stack.store.load(run_id)
    assert stuck is not None and not stuck.terminal
    stack.start_worker("w2", FAILOVER_FAKE_SETTLE_CHECKS="12")
    # The message the dead worker held comes back one of two ways: the broker restores it once its
    # visibility timeout passes, or (if the worker died between taking it off the queue and marking
    # it unacknowledged, a window kombu has) the overdue sweep that beat runs re-sends it. Run the
    # sweep here as beat would.
    deadline = time.monotonic() + 90
    while (run := stack.store.load(run_id)) is not None and not run.terminal:
        assert time.monotonic() < deadline, f"run stuck: {run.state_name} {run.dispatch}"
        stack.engine.redrive()
        time.sleep(0.5)
    assert run is not None and run.status is RunStatus.SUCCESS, run and run.message
    assert stack.coordination.active_cluster(group().key) == "site-b"


def test_a_step_message_pushed_by_a_commit_is_run_by_a_real_worker(
    stack: Stack, real_redis: redis.Redis
) -> None:
    """The transactional outbox (:mod:`workers.outbox`) on a real worker: this test's engine starts
    the run, its commit pushing the first step's message; the worker, which sends its own messages
    through Celery here (``FAILOVER_OUTBOX=false``), takes that message and runs it and the rest."""
    app = create_app(stack.settings)
    try:
        engine = Engine(
            stack.store,
            stack.engine.adapters,
            stack.engine.sender,
            stack.settings,
            outbox=BrokerOutbox(app, stack.settings),
        )
        run_id = stack.submit()  # its start message, sent through Celery, waits in the queue
        decision = engine.start(run_id)
    finally:
        app.close()
    assert decision is not None and decision.dispatch is not None
    assert decision.dispatch.step is Step.VALIDATE
    queued = [
        json.loads(raw)
        for raw in real_redis.lrange(f"{stack.settings.broker_prefix}{stack.settings.queue}", 0, -1)
    ]
    pushed = [m for m in queued if m["headers"]["task"] == "failover.validate"]
    assert len(pushed) == 1 and pushed[0]["headers"]["argsrepr"] == repr([run_id, decision.dispatch.ticket])

    stack.start_worker("w1", FAILOVER_OUTBOX="false")
    run = stack.wait_finished(run_id)
    assert run.status is RunStatus.SUCCESS, run.message
    assert run.steps["validate"].outcome == "done"
    logs = "".join(w.log_path.read_text() for w in stack.workers)
    assert "run.redriven" not in logs  # the step ran from the pushed message, not a re-send
