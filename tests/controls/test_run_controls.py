"""Operator controls of a run in flight, on the real stack: ``failoverctl run pause|resume|cancel|
retry-step|skip-step`` as separate processes, real Celery workers, sandbox clusters whose controllers
lag on purpose to hold a run in a wait step, DynamoDB on moto, under the fleet's invariant monitor."""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable

import pytest

from fsm.plan import Step
from fsm.run import RunStatus
from tests.chaos.checks import active_clusters, assert_only_active, eventually, primaries
from tests.chaos.conftest import LEASE_SECONDS, SHOP, ChaosStack
from tests.chaos.monitor import TWO_PRIMARIES, ZERO_SERVING
from tests.controls.helpers import catch_up, control, control_process, explain, lag, submit, waiting_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What each mode allows by design while it runs: CONSISTENCY has planned downtime, UPTIME two primaries.
ALLOWED = {"CONSISTENCY": ZERO_SERVING, "UPTIME": TWO_PRIMARIES}
# A wait step past the point of no return, and the cluster whose workloads lag to hold it there.
PAST = {"CONSISTENCY": ("site-b", Step.WAIT_READY), "UPTIME": ("site-a", Step.WAIT_SCALED_DOWN)}
# A wait step before the point of no return, and the cluster that lags to hold it there.
BEFORE = {"CONSISTENCY": ("site-a", Step.WAIT_SCALED_DOWN), "UPTIME": ("site-b", Step.WAIT_READY)}
RESOLVE_HINT = "failoverctl group resolve shop/shop --active CLUSTER --reason TEXT"


def _finish_clean(stack: ChaosStack, mode: str, active: str) -> None:
    """Once the lagging controller caught up: ``active`` alone serves, and nothing else happened."""
    eventually(lambda: active_clusters(stack.fleet) == [active], f"{active} alone serves", timeout=30)
    eventually(lambda: all(bool(v) == (c == active) for c, v in primaries(stack.fleet).items()), "primaries")
    assert_only_active(stack.fleet, active)
    stack.monitor.close(ALLOWED[mode], "the run")
    time.sleep(0.2)
    stack.monitor.stop()
    assert stack.monitor.violations == [], stack.monitor.report()


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_past_the_point_of_no_return_cancel_is_refused_and_pause_resume_retry_skip_apply(
    make_stack: Callable[..., ChaosStack], mode: str
) -> None:
    cluster, step = PAST[mode]
    stack = make_stack()
    stack.start_worker("w1")
    stack.monitor.open(ALLOWED[mode], "the run")
    lag(stack, cluster, "workload_delay")
    run_id = submit(stack, mode, f"{mode.lower()}-controls")
    waiting_in(stack, run_id, step)

    # cancel past the point of no return: refused, with the command that settles a group, nothing changed
    result = control_process(stack, "cancel", run_id, "--reason", "changed my mind")
    assert result.returncode == 2, explain(result, stack)
    assert "point of no return" in result.stderr and RESOLVE_HINT in result.stderr, result.stderr
    assert stack.store.load(run_id).controls == []  # type: ignore[union-attr]

    # pause: applied at the step boundary; held longer than the lease, the group stays the run's
    result = control(stack, "pause", run_id, "--reason", "look first")
    assert result.returncode == 0 and "pause applied" in result.stdout, explain(result, stack)
    paused = stack.store.load(run_id)
    assert paused is not None and paused.paused and paused.at_step is step
    checks = paused.steps[step.value].checks
    time.sleep(LEASE_SECONDS * 1.5)  # only the sweep's renewals can keep the lease this long
    still = stack.store.load(run_id)
    assert still is not None and still.paused and still.at_step is step
    assert still.steps[step.value].checks == checks  # nothing was checked while paused
    lock = stack.coordination.lock_info(SHOP)
    assert lock is not None and lock.run_id == still.lock_owner and lock.expires_at > time.time(), lock
    shown = stack.cli("status", still.failover)
    assert "PAUSED" in shown.stdout, shown.stdout
    refused = control(stack, "retry-step", run_id, "--reason", "now")
    assert refused.returncode == 2 and "is paused" in refused.stderr, explain(refused, stack)

    # resume: continues from where it paused; retry-step: checked again now; skip-step: moves on
    for args, said in (
        (("resume", run_id, "--reason", "looked"), "resume applied"),
        (("retry-step", run_id, "--reason", "poke"), "retry-step applied"),
        (("skip-step", run_id, step.value, "--reason", "known slow controller"), "skip-step applied"),
    ):
        result = control(stack, *args)
        assert result.returncode == 0 and said in result.stdout, explain(result, stack)
    run = stack.finish(run_id)
    assert run.status is RunStatus.SUCCESS, run.message
    assert (
        run.steps[step.value].outcome == "skipped"
        and "known slow controller" in run.steps[step.value].message
    )
    assert [c.action.value for c in run.controls] == ["pause", "resume", "retry-step", "skip-step"]
    assert {c.outcome.value for c in run.controls} == {"applied"}
    [record] = stack.history(run_id)
    assert record.outcome == "SUCCESS" and len(record.controls) == 4, record
    assert all(getpass.getuser() in line for line in record.controls), record.controls
    catch_up(stack, cluster, "workload_delay")
    _finish_clean(stack, mode, "site-b")


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_cancel_before_the_point_of_no_return_compensates_and_ends_cancelled(
    make_stack: Callable[..., ChaosStack], mode: str
) -> None:
    cluster, step = BEFORE[mode]
    stack = make_stack()
    stack.start_worker("w1")
    stack.monitor.open(ALLOWED[mode], "the run")
    lag(stack, cluster, "workload_delay")
    run_id = submit(stack, mode, f"{mode.lower()}-cancel")
    waiting_in(stack, run_id, step)

    result = control(stack, "cancel", run_id, "--reason", "wrong target")
    assert result.returncode == 0 and "cancel applied" in result.stdout, explain(result, stack)
    catch_up(stack, cluster, "workload_delay")  # the undo waits on the same controller
    run = stack.finish(run_id)
    assert run.status is RunStatus.CANCELLED and run.state_name == "CANCELLED", run.message
    assert run.failure is not None and run.failure.cancelled and run.failure.step is step
    assert len(run.compensation) > 1 and all(
        run.steps[f"undo:{i}:{a.step.value}"].outcome == "done" for i, a in enumerate(run.compensation)
    ), run.steps
    assert "wrong target" in run.message
    assert stack.coordination.active_cluster(SHOP) == "site-a"
    assert stack.coordination.lock_info(SHOP) is None and stack.coordination.divergence(SHOP) is None
    [record] = stack.history(run_id)
    assert record.outcome == "CANCELLED" and "cancel" in record.controls[0], record
    _finish_clean(stack, mode, "site-a")


def test_retry_step_tries_a_failed_and_waiting_step_again_now(make_stack: Callable[..., ChaosStack]) -> None:
    stack = make_stack()
    stack.start_worker("w1")
    stack.monitor.open(ZERO_SERVING, "the run")
    # A backoff of 30 to 60 s after a failed attempt: only a retry-step makes the run go on sooner.
    run_id = submit(stack, "CONSISTENCY", "retry", retry_initial=60.0, retry_max=60.0, effect_timeout=300.0)
    faults = stack.fleet["site-a"].faults
    faults.scope(("patch", "deployments"))
    faults.error_codes = (500,)
    faults.error_rate = 1.0
    failing = stack.wait_for(run_id, lambda r: r.steps.get("scale_down_workloads", None) is not None)
    assert failing.steps["scale_down_workloads"].errors == 1 and failing.dispatch is not None
    assert failing.dispatch.countdown >= 30, failing.dispatch
    faults.reset()
    result = control(stack, "retry-step", run_id, "--reason", "API server fixed")
    assert result.returncode == 0 and "retry-step applied" in result.stdout, explain(result, stack)
    done = stack.finish(run_id, timeout=25)  # well under the 30 s the backoff would have waited
    assert done.status is RunStatus.SUCCESS, done.message
    _finish_clean(stack, "CONSISTENCY", "site-b")


def test_skipping_a_volume_guard_needs_force_and_is_recorded_loudly(
    make_stack: Callable[..., ChaosStack],
) -> None:
    stack = make_stack()
    stack.start_worker("w1")
    stack.monitor.open(ZERO_SERVING, "the run")
    lag(stack, "site-a", "volume_delay")
    run_id = submit(stack, "CONSISTENCY", "skip-guard")
    held = waiting_in(stack, run_id, Step.WAIT_VOLUMES_DEMOTED)

    result = control(stack, "skip-step", run_id, "wait_volumes_demoted", "--reason", "in a hurry")
    assert result.returncode == 2, explain(result, stack)
    assert "two writers" in result.stderr and "--force" in result.stderr, result.stderr
    after = stack.store.load(run_id)
    assert after is not None and after.controls == [] and after.at_step is Step.WAIT_VOLUMES_DEMOTED
    assert after.failure is None and after.steps.keys() == held.steps.keys()

    # Forced: site-a's volumes may still be primary when site-b's are promoted. That is the risk taken.
    stack.monitor.open(TWO_PRIMARIES, "a volume guard skipped with --force")
    result = control(
        stack, "skip-step", run_id, "wait_volumes_demoted", "--force", "--reason", "storage team ok"
    )
    assert result.returncode == 0 and "FORCED past a volume guard" in result.stdout, explain(result, stack)
    assert "two writers" in result.stdout
    run = stack.finish(run_id)
    assert run.status is RunStatus.SUCCESS, run.message
    skipped = run.steps[Step.WAIT_VOLUMES_DEMOTED.value]
    assert (
        skipped.outcome == "skipped" and "FORCED" in skipped.message and "storage team ok" in skipped.message
    )
    [record] = stack.history(run_id)
    assert any("--force" in line and "FORCED" in line for line in record.controls), record.controls
    # Nothing outside the run stops it: the fence admission policy (deploy/fencing) refuses only writes
    # under a stale epoch, and this run's epoch is the newest; no cluster sees the other's volumes. So
    # site-b was promoted while site-a still reported primary, as the refusal and the README say.
    assert all(primaries(stack.fleet).values()), primaries(stack.fleet)
    assert stack.monitor.allowed[TWO_PRIMARIES] > 0, stack.monitor.report()
    catch_up(stack, "site-a", "volume_delay")
    eventually(lambda: not primaries(stack.fleet)["site-a"], "site-a's volumes secondary")
    stack.monitor.close(TWO_PRIMARIES, "a volume guard skipped with --force")
    _finish_clean(stack, "CONSISTENCY", "site-b")


def test_a_control_asked_mid_step_waits_for_the_step_to_report_back(
    make_stack: Callable[..., ChaosStack],
) -> None:
    stack = make_stack()
    stack.start_worker("w1")
    stack.monitor.open(ZERO_SERVING, "the run")
    gate = stack.gate("site-a", "patch", "deployments")  # scale_down_workloads held at the API server
    run_id = submit(stack, "CONSISTENCY", "mid-step")
    assert gate.arrived.wait(30), stack.worker_logs()[-3000:]

    result = control(stack, "pause", run_id, "--reason", "mid-step", "--wait", "1")
    assert result.returncode == 0 and "not applied yet" in result.stdout, explain(result, stack)
    during = stack.store.load(run_id)
    assert during is not None and not during.paused and during.controls[-1].pending
    assert during.at_step is Step.SCALE_DOWN_WORKLOADS and "scale_down_workloads" not in during.steps

    gate.release()
    paused = stack.wait_for(run_id, lambda r: r.paused)
    assert paused.steps["scale_down_workloads"].outcome == "done"  # the step finished, then the pause
    assert paused.at_step is Step.SUSPEND_FLUX and "suspend_flux" not in paused.steps
    assert paused.controls[-1].outcome.value == "applied"
    result = control(stack, "resume", run_id, "--reason", "go on")
    assert result.returncode == 0 and "resume applied" in result.stdout, explain(result, stack)
    assert stack.finish(run_id).status is RunStatus.SUCCESS
    _finish_clean(stack, "CONSISTENCY", "site-b")
