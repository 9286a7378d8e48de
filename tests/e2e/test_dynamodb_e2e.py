"""End to end with the real DynamoDB adapter (moto server over HTTP) behind the engine's lock,
completion, journal and volume handshake: real Celery worker, real Redis, fake clusters."""

from __future__ import annotations

import pytest

from fsm.run import Run, RunStatus
from sandbox.dynamo import SerializedMotoServer
from tests.e2e.conftest import Stack
from tests.factories import group

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _executions(run: Run) -> int:
    return 1 + sum(record.attempts for record in run.steps.values())


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_a_failover_takes_the_lock_flips_the_owner_and_writes_history_in_dynamodb(
    dynamo_stack: Stack, moto: SerializedMotoServer, mode: str
) -> None:
    stack = dynamo_stack
    stack.start_worker("w1")
    before = sum(moto.calls.values())
    run = stack.wait_finished(stack.submit(mode))
    calls = sum(moto.calls.values()) - before
    assert run.status is RunStatus.SUCCESS, run.message
    g = group()
    assert stack.coordination.active_cluster(g.key) == "site-b"
    assert stack.coordination.lock_info(g.key) is None
    # The lock index entry went with the lock, in the completion transaction (the worker named its holder).
    assert stack.coordination.held_locks(stack.settings.holder) == []
    [record] = stack.coordination.history(g.key)
    assert (record.run_id, record.outcome, record.mode) == (run.run_id, "SUCCESS", mode)
    assert record.downtime_seconds == run.downtime_seconds()
    journal = stack.coordination.journal(g.key, run.run_id)
    assert [e.sequence for e in journal] == list(range(1, len(journal) + 1))
    assert journal[-1].stage == "COMPLETION"
    # The journal holds the whole run: a new Redis could resume from it.
    assert Run.model_validate_json(journal[-1].run_json).state_name == "SUCCEEDED"
    per_step = calls / _executions(run)
    print(
        f"\n{mode}: {calls} DynamoDB calls for {_executions(run)} step executions = {per_step:.2f} per step"
    )
    assert per_step <= 3


def test_a_second_failover_of_the_same_group_fails_at_once_naming_the_holder(dynamo_stack: Stack) -> None:
    stack = dynamo_stack
    stack.start_worker("w1", FAILOVER_FAKE_SETTLE_CHECKS="20")
    first = stack.submit(run_id="first")
    stack.wait_for(first, lambda r: r.token is not None)
    second = stack.wait_finished(stack.submit(run_id="second"))
    assert second.status is RunStatus.FAILED
    assert second.failure is not None and second.failure.step.value == "acquire_lock"
    assert "for run 'first'" in second.message and "lease expires in" in second.message
    done = stack.wait_finished(first)
    assert done.status is RunStatus.SUCCESS
    history = {h.run_id: h.outcome for h in stack.coordination.history(group().key)}
    assert history == {"first": "SUCCESS", "second": "FAILED"}


def test_a_lost_redis_is_rebuilt_from_the_journal_and_the_run_resumes(dynamo_stack: Stack) -> None:
    stack = dynamo_stack
    stack.start_worker("w1")
    run_id = stack.submit()
    stack.wait_for(run_id, lambda r: r.journal_sequence >= 2)
    stack.workers[0].kill()
    stack.store.forget(run_id)  # Redis lost the run
    assert stack.store.load(run_id) is None
    stack.start_worker("w2")
    rebuilt = stack.engine.rebuild(group().key, run_id)
    assert rebuilt is not None and rebuilt.journal_sequence >= 2
    assert rebuilt.dispatch is not None and rebuilt.dispatch.redriven == 1
    run = stack.wait_finished(run_id)
    assert run.status is RunStatus.SUCCESS, run.message
    assert stack.coordination.active_cluster(group().key) == "site-b"
