"""Fencing in the worker: the fence raised before any change, a fenced run that undoes nothing, and the
lease guard that refuses to write on a lease it cannot confirm (fakes of our own ports; the clusters'
own refusal is tested against the sandbox's admission in tests/sandbox and tests/chaos)."""

from __future__ import annotations

import pytest

from fsm.plan import Phase, Step
from fsm.run import RunStatus, Superseded
from tests.factories import all_refs, group
from tests.unit.test_engine import Harness, harness, submit  # noqa: F401 (the fixture)
from workers.errors import LeaseLost, TemporaryError
from workers.lease import LeaseGuard


def test_the_fence_is_raised_on_every_cluster_before_the_first_change(harness: Harness) -> None:  # noqa: F811
    g = group()
    run_id = submit(harness)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS, run.message
    assert harness.clusters.fence("site-a", g.key) == harness.clusters.fence("site-b", g.key) == run.token
    timeline = [e["op"] for e in harness.clusters.timeline()]
    first_change = next(i for i, op in enumerate(timeline) if op.startswith("make_"))
    assert [op for op in timeline[:first_change] if op == "raise_fence"] == ["raise_fence", "raise_fence"]


def test_a_run_fenced_by_a_newer_one_stops_and_undoes_nothing(harness: Harness) -> None:  # noqa: F811
    g = group()
    harness.clusters.raise_fence("site-b", g.key, token=7)  # a newer run got there first
    run_id = submit(harness)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.FAILED and run.state is Phase.FAILED
    assert run.failure is not None and run.failure.step is Step.RAISE_FENCE
    assert run.failure.superseded is Superseded.FENCED and "fenced" in run.failure.cause
    assert [a.step for a in run.compensation] == [Step.ABORT]
    assert not [e for e in harness.clusters.timeline() if e["op"].startswith("make_")]
    assert all(harness.clusters.role("site-a", ref) == "active" for ref in all_refs(g))
    [record] = harness.coordination.history(g.key)
    assert record.outcome == "FENCED"
    assert harness.coordination.divergence(g.key) is None  # superseded is not diverged


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Coordination:
    """Only what the guard uses: renew_lease, answering as told."""

    def __init__(self) -> None:
        self.renewals = 0
        self.fail: Exception | None = None

    def renew_lease(self, group: object, *, token: int, lease_seconds: float, now: float) -> float:
        self.renewals += 1
        if self.fail is not None:
            raise self.fail
        return now + lease_seconds


def _guard(clock: _Clock, coordination: _Coordination) -> LeaseGuard:
    return LeaseGuard(
        coordination,  # type: ignore[arg-type]
        group().key,
        token=3,
        lease_seconds=40.0,
        margin=10.0,
        confirmed_at=clock.now,
        monotonic=clock,
        wall=clock,
    )


def test_the_guard_renews_once_half_the_lease_has_passed() -> None:
    clock, coordination = _Clock(), _Coordination()
    guard = _guard(clock, coordination)
    clock.now += 19
    guard.check()
    assert coordination.renewals == 0
    clock.now += 2  # 21s of 40: renew, and the lease counts from now
    guard.check()
    assert coordination.renewals == 1 and guard.left() == pytest.approx(40.0)


def test_the_guard_refuses_to_write_when_the_lease_is_lost_or_cannot_be_confirmed() -> None:
    clock, coordination = _Clock(), _Coordination()
    guard = _guard(clock, coordination)
    clock.now += 25
    coordination.fail = TemporaryError("DynamoDB 503")
    guard.check()  # 15s left, above the margin: the write may still go out
    clock.now += 6
    with pytest.raises(TemporaryError, match=r"cannot be confirmed and has 9\.0s left: not writing"):
        guard.check()
    coordination.fail = LeaseLost("another run holds the lock")
    with pytest.raises(LeaseLost):
        guard.check()


def test_a_paused_process_never_writes_on_an_expired_lease() -> None:
    """The monotonic clock jumped past the lease (a frozen VM): renewing is refused by DynamoDB, and
    even if it were not attempted the guard would refuse to write."""
    clock, coordination = _Clock(), _Coordination()
    guard = _guard(clock, coordination)
    clock.now += 120
    coordination.fail = LeaseLost("lock taken by run 9 with token 4")
    with pytest.raises(LeaseLost, match="token 4"):
        guard.check()
    coordination.fail = TemporaryError("DynamoDB unreachable")
    with pytest.raises(TemporaryError, match="not writing"):
        guard.check()


def test_where_the_group_is_active_is_checked_under_the_lock(harness: Harness) -> None:  # noqa: F811
    """The owner moved after the run was created: the run finds out under the lock, gives the lock
    back and fails having changed nothing."""
    g = group()
    run_id = submit(harness)
    harness.pump(limit=2)  # start, validate
    info_before = harness.coordination.lock_info(g.key)
    assert info_before is None
    harness.coordination.client.set(harness.coordination._key("owner", g.key), "site-b")
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert run.failure is not None and run.failure.step is Step.ACQUIRE_LOCK
    assert "'site-b' is already the active cluster" in run.failure.cause
    assert harness.coordination.lock_info(g.key) is None  # given back at once, not left to expire
    assert not [e for e in harness.clusters.timeline() if e["op"] != "raise_fence"]
