"""The client-side rate limit (workers.kube_limits) on a fake clock: burst, refill, pacing, per cluster."""

from __future__ import annotations

import pytest

from workers.kube_limits import RateLimits, TokenBucket


class FakeClock:
    """A clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_full_bucket_lets_a_burst_through_without_waiting() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert clock.slept == []


def test_past_the_burst_each_request_waits_one_token_at_qps() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        bucket.take()
    waits = [bucket.take() for _ in range(4)]
    assert waits == pytest.approx([0.1] * 4)  # the clock moves by each sleep: one token per 0.1 s
    assert clock.now == pytest.approx(100.4)


def test_reservations_queue_up_when_callers_do_not_sleep_in_between() -> None:
    """Concurrent callers reserve in turn: the n-th one past the burst waits n/qps, nobody jumps ahead."""
    clock = FakeClock()
    bucket = TokenBucket(4, 2, clock=clock, sleep=clock.sleep)
    waits = [bucket.reserve() for _ in range(6)]
    assert waits == pytest.approx([0.0, 0.0, 0.25, 0.5, 0.75, 1.0])


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.take()
    clock.now += 60.0  # a long pause: 600 tokens' worth, but the bucket holds 3
    assert [bucket.take() for _ in range(3)] == [0.0] * 3
    assert bucket.take() == pytest.approx(0.1)


def test_qps_zero_turns_the_limit_off() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0, 0, clock=clock, sleep=clock.sleep)
    assert all(bucket.take() == 0.0 for _ in range(1000))
    assert clock.slept == []


def test_a_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(5, 0)


def test_each_cluster_has_its_own_bucket_and_its_waits_are_recorded() -> None:
    clock = FakeClock()
    seen: list[tuple[str, float]] = []
    limits = RateLimits(2, 1, on_wait=lambda c, s: seen.append((c, s)), clock=clock, sleep=clock.sleep)
    assert limits.take("site-a") == 0.0
    assert limits.take("site-b") == 0.0  # another API server: its own full bucket
    assert limits.take("site-a") == pytest.approx(0.5)
    assert limits.take("site-a") == pytest.approx(0.5)
    assert limits.waits == {"site-a": 2}
    assert limits.waited["site-a"] == pytest.approx(1.0)
    assert seen == [("site-a", pytest.approx(0.5)), ("site-a", pytest.approx(0.5))]
