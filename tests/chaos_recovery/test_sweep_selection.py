"""The sweep's selection on fakeredis: which due runs it sends again, and that it reads only the due
ones (O(overdue)), whatever the number of runs in flight."""

from __future__ import annotations

import fakeredis
import pytest

from fsm.plan import Step
from fsm.run import Dispatch, Run, new_run
from sandbox.fakes import fake_adapters
from sandbox.stack import sandbox_signer
from tests.factories import failover, group
from tests.unit.test_engine import ListSender
from workers.engine import Engine
from workers.recovery import Claim, Timeouts, WorkerInfo, resend_reason
from workers.settings import Settings
from workers.store import RunStore

NOW = 10_000.0
T = Timeouts(heartbeat_interval=1.0, schedule_to_start=2.0, start_to_close=120.0, redrive_after=45.0)
Q = "failover"


def _run(run_id: str = "r", *, due_at: float = NOW - 10, ticket: int = 3, redriven: int = 0) -> Run:
    run = new_run(run_id=run_id, failover=failover(), group=group(), source_cluster="site-a", now=NOW - 100)
    dispatch = Dispatch(step=Step.SCALE_DOWN_WORKLOADS, ticket=ticket, due_at=due_at, redriven=redriven)
    return run.model_copy(update={"dispatch": dispatch, "tickets": ticket})


FREE = {"w-free": WorkerInfo(queues=(Q,), slots=1, busy=0, free_for=5.0)}
BUSY = {"w-busy": WorkerInfo(queues=(Q,), slots=1, busy=1, free_for=0.0)}


def _why(
    run: Run, *, claim: Claim | None = None, workers: dict[str, WorkerInfo] | None = None, late: float = 10.0
) -> str | None:
    return resend_reason(
        run, due_at=NOW - late, queue=Q, claim=claim, workers=workers or {}, now=NOW, timeouts=T
    )


def test_a_step_claimed_by_a_dead_worker_is_sent_again_at_once() -> None:
    claim = Claim(ticket=3, attempt=0, worker="gone", at=NOW - 0.5)
    assert "stopped heartbeating" in (_why(_run(), claim=claim, workers=FREE, late=0.5) or "")


def test_a_step_claimed_by_a_live_worker_is_left_until_start_to_close() -> None:
    claim = Claim(ticket=3, attempt=0, worker="w-busy", at=NOW - 60)
    assert _why(_run(), claim=claim, workers=BUSY, late=60) is None
    late = Claim(ticket=3, attempt=0, worker="w-busy", at=NOW - 121)
    assert "start_to_close" in (_why(_run(), claim=late, workers=BUSY, late=121) or "")


def test_a_claim_of_an_earlier_delivery_does_not_count() -> None:
    # Resent once already (redriven 1): the dead worker's claim of attempt 0 is history.
    claim = Claim(ticket=3, attempt=0, worker="gone", at=NOW - 10)
    assert _why(_run(redriven=1), claim=claim, workers=BUSY, late=1.0) is None
    old_ticket = Claim(ticket=2, attempt=0, worker="gone", at=NOW - 10)
    assert _why(_run(), claim=old_ticket, workers=BUSY, late=1.0) is None


def test_an_unclaimed_message_is_lost_only_if_a_worker_of_its_queue_was_free() -> None:
    assert _why(_run(), workers=FREE, late=1.0) is None  # within schedule-to-start
    assert "free slot" in (_why(_run(), workers=FREE, late=2.5) or "")
    assert _why(_run(), workers=BUSY, late=30) is None  # queued behind busy workers: not lost
    other = {"w-other": WorkerInfo(queues=("failover.site-b",), slots=1, busy=0, free_for=9.0)}
    assert _why(_run(), workers=other, late=30) is None  # a free worker of another queue says nothing
    just_freed = {"w": WorkerInfo(queues=(Q,), slots=2, busy=1, free_for=0.2)}
    assert _why(_run(), workers=just_freed, late=30) is None


def test_the_schedule_to_start_wait_doubles_with_each_resend_up_to_the_backstop() -> None:
    assert _why(_run(redriven=2), workers=FREE, late=7.9) is None  # 2 * 2**2 = 8 s
    assert _why(_run(redriven=2), workers=FREE, late=8.1) is not None
    assert _why(_run(redriven=9), workers=FREE, late=44) is None  # capped at redrive_after
    assert "after it was due" in (_why(_run(redriven=9), workers={}, late=45.5) or "")


def test_a_message_queued_behind_busy_workers_is_never_sent_again_however_late() -> None:
    """Overdue means due and not claimed by a live worker, never merely queued (issue 15)."""
    assert _why(_run(), workers=BUSY, late=46) is None
    assert _why(_run(), workers=BUSY, late=3600) is None


def test_the_backstop_resends_when_no_live_worker_consumes_the_queue() -> None:
    assert "no live worker" in (_why(_run(), workers={}, late=46) or "")
    other = {"w-other": WorkerInfo(queues=("failover.site-b",), slots=1, busy=1, free_for=0.0)}
    assert _why(_run(), workers=other, late=46) is not None
    assert _why(_run(), workers={}, late=44) is None


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(fake_redis: fakeredis.FakeRedis) -> Engine:
    settings = Settings(redis_url="redis://127.0.0.1:6379/0")
    return Engine(
        RunStore(fake_redis, signer=sandbox_signer(), prefix="t:"),
        fake_adapters(fake_redis, "t:fake:"),
        ListSender(),
        settings,
        clock=Clock(),
    )


def test_the_sweep_reads_only_the_due_runs(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store = engine.store
    for i in range(300):  # in flight, due later: never read
        assert store.create(_run(f"later-{i}", due_at=NOW + 30))
        run = store.load(f"later-{i}")
        assert run is not None and store.commit(_run(f"later-{i}", due_at=NOW + 30), expected_version=1)
    for name, late in [("lost", 3.0), ("dead", 0.5), ("live", 0.5), ("queued", 0.5)]:
        assert store.create(_run(name))
        assert store.commit(_run(name, due_at=NOW - late), expected_version=1)
    store.heartbeat("w-live", WorkerInfo(queues=("failover",), slots=2, busy=1, free_for=4.0), ttl=3.0)
    store.claim("dead", Claim(ticket=3, attempt=0, worker="w-dead", at=NOW - 0.4), ttl=60)
    store.claim("live", Claim(ticket=3, attempt=0, worker="w-live", at=NOW - 0.4), ttl=60)
    loaded: list[str] = []
    load_many = store.load_many
    monkeypatch.setattr(store, "load_many", lambda ids: (loaded.extend(ids), load_many(ids))[1])

    sent = engine.redrive()

    assert sorted(loaded) == ["dead", "live", "lost", "queued"]
    assert sorted(sent) == ["dead", "lost"]  # "queued" is only 0.5 s late: not yet
    sender = engine.sender
    assert isinstance(sender, ListSender)
    assert sorted(m.run_id for m in sender.sent) == ["dead", "lost"]
    # The resend counts, and the dead worker's claim no longer holds: the next sweeps leave it be.
    assert engine.redrive() == []
    dead = store.load("dead")
    assert dead is not None and dead.dispatch is not None and dead.dispatch.redriven == 1
