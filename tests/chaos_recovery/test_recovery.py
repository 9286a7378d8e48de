"""Crash and loss scenarios on the real stack, with the production recovery settings; each prints what
it measured (run with ``-s`` to see it)."""

from __future__ import annotations

import time

import pytest

from fsm.plan import Step
from fsm.run import Run, RunStatus
from tests.chaos_recovery.conftest import ChaosStack, OwnRedis
from tests.factories import group
from workers.recovery import claim_holds

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]


def _claimed_step(
    stack: ChaosStack, run_id: str, *, older_than: float, not_ticket: int | None = None, timeout: float = 30
):
    """(run, claim) once a live worker has been running one of the run's steps for ``older_than``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = stack.store.load(run_id)
        claim = stack.store.claims([run_id]).get(run_id)
        if run is not None and run.terminal:
            raise AssertionError(f"run finished before a step could be killed: {run.message}")
        if (
            run is not None
            and claim_holds(run, claim)
            and claim is not None
            and claim.ticket != not_ticket
            and time.time() - claim.at >= older_than
            and (worker := stack.worker_of(claim.worker)) is not None
            and worker.process.poll() is None
        ):
            return run, claim
        time.sleep(0.02)
    raise AssertionError(f"no step of {run_id} was claimed for {older_than}s within {timeout}s")


def _reclaimed(stack: ChaosStack, run_id: str, dead: str, timeout: float = 30) -> float:
    """When another worker claimed the run's step (or the run moved on) after ``dead`` was killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claim = stack.store.claims([run_id]).get(run_id)
        if claim is not None and claim.worker != dead:
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"nobody took over run {run_id} within {timeout}s")


def _succeeded(run: Run) -> None:
    assert run.status is RunStatus.SUCCESS, run.message


def test_a_worker_sigkilled_at_a_step_costs_at_most_5s(chaos: ChaosStack) -> None:
    delay = {"FAILOVER_CHAOS_WRITE_DELAY": "0.6"}
    for _ in range(3):
        chaos.start_worker(**delay)
    # Baseline: site-a -> site-b without faults.
    started = time.monotonic()
    _succeeded(chaos.wait_finished(chaos.submit(), timeout=90))
    baseline = time.monotonic() - started
    # The same failover back, site-b -> site-a, killing the worker of a step twice.
    started = time.monotonic()
    run_id = chaos.submit(target="site-a")
    recoveries, last_ticket = [], None
    for _ in range(2):
        _, claim = _claimed_step(chaos, run_id, older_than=0.3, not_ticket=last_ticket)
        victim = chaos.worker_of(claim.worker)
        assert victim is not None
        killed = time.monotonic()
        victim.kill()
        recoveries.append(_reclaimed(chaos, run_id, claim.worker) - killed)
        last_ticket = claim.ticket
    run = chaos.wait_finished(run_id, timeout=90)
    _succeeded(run)
    assert chaos.coordination.active_cluster(group().key) == "site-a"
    took = time.monotonic() - started
    per_kill = (took - baseline) / 2
    print(
        f"\nSIGKILL at a step: baseline {baseline:.1f}s, with 2 kills {took:.1f}s, "
        f"+{per_kill:.1f}s per kill; "
        f"kill -> step taken over by another worker: {', '.join(f'{r:.1f}s' for r in recoveries)}"
    )
    assert max(recoveries) <= 5.0
    assert per_kill <= 5.0


def test_all_workers_sigkilled_at_once_and_restarted_2s_later_finish_the_run(chaos: ChaosStack) -> None:
    delay = {"FAILOVER_CHAOS_WRITE_DELAY": "0.5"}
    for _ in range(2):
        chaos.start_worker(**delay)
    run_id = chaos.submit()
    _claimed_step(chaos, run_id, older_than=0.2)
    for worker in chaos.alive():
        worker.kill()
    time.sleep(2.0)
    restarted = time.monotonic()
    for _ in range(2):
        chaos.start_worker(wait=False, **delay)
    run = chaos.wait_finished(run_id, timeout=60)
    _succeeded(run)
    print(
        "\nall workers SIGKILLed, restarted 2s later: the run finished "
        f"{time.monotonic() - restarted:.1f}s after the restart"
    )


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_a_lost_redis_resumes_the_run_from_the_journal_within_30s(chaos: ChaosStack, mode: str) -> None:
    for _ in range(2):
        chaos.start_worker(FAILOVER_CHAOS_WRITE_DELAY="0.3", FAILOVER_FAKE_SETTLE_CHECKS="8")
    run_id = chaos.submit(mode)
    before = chaos.wait_for(run_id, lambda r: r.journal_sequence >= 2)
    lost = time.monotonic()
    assert chaos.lose_redis() > 0
    assert chaos.store.load(run_id) is None
    back = chaos.wait_for(run_id, lambda r: True, timeout=30)
    resumed = time.monotonic() - lost
    assert back.journal_sequence >= 2
    run = chaos.wait_finished(run_id, timeout=60)
    _succeeded(run)
    assert chaos.coordination.active_cluster(group().key) == "site-b"
    print(
        f"\nRedis lost mid-run ({mode}, at journal entry #{before.journal_sequence}): rebuilt and resent "
        f"{resumed:.1f}s later, finished {time.monotonic() - lost:.1f}s after the loss"
    )
    assert resumed <= 30.0


def test_a_redis_restarted_empty_during_a_wait_step_resumes_the_run(
    chaos_own_redis: ChaosStack, own_redis: OwnRedis
) -> None:
    stack = chaos_own_redis
    for _ in range(2):
        stack.start_worker(FAILOVER_FAKE_SETTLE_CHECKS="25")
    run_id = stack.submit()
    stack.wait_for(run_id, lambda r: r.state is Step.WAIT_SCALED_DOWN and r.journal_sequence >= 1)
    lost = time.monotonic()
    own_redis.kill()
    time.sleep(0.5)
    own_redis.start()  # the same port, empty
    back = stack.wait_for(run_id, lambda r: True, timeout=30)
    resumed = time.monotonic() - lost
    run = stack.wait_finished(run_id, timeout=60)
    _succeeded(run)
    # Both workers lived through it (kombu's channel close once killed a worker holding a countdown
    # message: workers/broker.py); the run did not finish on a replacement.
    dead = [w for w in stack.workers if w.process.poll() is not None]
    assert dead == [], "a worker exited when Redis restarted: " + dead[0].log_path.read_text()[-3000:]
    print(
        f"\nRedis restarted empty during {back.state_name}: rebuilt {resumed:.1f}s after the crash, "
        f"finished {time.monotonic() - lost:.1f}s after it"
    )
    assert resumed <= 30.0
