"""The admission queue on a real Redis: the bound on ready work, lanes, flows taking turns at their
rate, runs cancelled while queued, and concurrent admitters that never overshoot."""

from __future__ import annotations

import threading
import urllib.request
from dataclasses import dataclass, field

import pytest
import redis
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from fsm.decide import Event, EventKind, decide
from fsm.plan import Phase
from fsm.run import Run, RunStatus, new_run
from producers.cli import app
from sandbox.stack import SANDBOX_RUN_KEY, sandbox_signer
from tests.factories import failover, group
from workers.admission import BULK_LANE, INTERACTIVE_LANE, Admission, Bounds, queued_for
from workers.messages import START_TASK
from workers.metrics import start_metrics_server
from workers.recovery import WorkerInfo
from workers.settings import get_settings
from workers.store import RunStore

pytestmark = pytest.mark.integration


@dataclass
class Sent:
    starts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, name: str, run_id: str, ticket: int, *, countdown: float, cluster: str | None) -> None:
        assert name == START_TASK and ticket == 0 and countdown == 0.0
        with self.lock:
            self.starts.append(run_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def queue(
    store: RunStore, run_id: str, flow: str, *, at: float, lane: int = BULK_LANE, groups: int = 1
) -> Run:
    run = new_run(run_id=run_id, failover=failover(name=flow), group=group(), source_cluster="site-a", now=at)
    assert store.create(run, queued=queued_for(run, automatic=lane == BULK_LANE, groups=groups, rate=10.0))
    return run


@pytest.fixture
def store(real_redis: redis.Redis, prefix: str) -> RunStore:
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
    store.heartbeat("w1", WorkerInfo(queues=("failover",), slots=1), ttl=60)
    return store


def test_runs_are_admitted_while_ready_work_is_under_the_bound(store: RunStore) -> None:
    clock, sent = Clock(), Sent()
    admission = Admission(store, Bounds(per_slot=2, max_in_flight=100), clock=clock)
    for i in range(5):
        queue(store, f"r{i}", f"f{i}", at=clock.now)
    assert store.due(before=clock.now + 1) == []  # queued runs are not in flight: the sweep ignores them
    assert admission.admit(sent) == ["r0", "r1"]
    assert admission.admit(sent) == []  # two ready runs per slot, one slot
    assert admission.waiting() == 3
    # r0 starts and goes to wait on a countdown: it holds no message now, so one more fits.
    r0 = store.load("r0")
    assert r0 is not None
    started = decide(r0, Event(kind=EventKind.START), clock.now).run
    waiting = started.model_copy(
        update={"dispatch": started.dispatch.model_copy(update={"due_at": clock.now + 5})}
    )  # type: ignore[union-attr]
    assert store.commit(waiting, expected_version=r0.version) is not None
    assert admission.admit(sent) == ["r2"]
    assert sent.starts == ["r0", "r1", "r2"]


def test_an_operators_failover_goes_first_with_room_of_its_own(store: RunStore) -> None:
    clock, sent = Clock(), Sent()
    bounds = Bounds(per_slot=3, max_in_flight=100, admitted_per_slot=4)
    admission = Admission(store, bounds, clock=clock)
    for i in range(6):
        queue(store, f"auto{i}", f"auto{i}", at=clock.now + i)
    queue(store, "op", "by-hand", at=clock.now + 10, lane=INTERACTIVE_LANE)
    clock.now += 10
    assert admission.admit(sent) == ["op", "auto0", "auto1"]  # 3 ready: the bulk lane's bound
    # The site is at its bound for automatic runs; an operator's Failover still starts at once: its
    # lane may go up to all the bulk lane can fill (4 admitted) plus its own 3.
    for i in range(2, 6):
        queue(store, f"op{i}", f"by-hand-{i}", at=clock.now, lane=INTERACTIVE_LANE)
    assert admission.admit(sent) == ["op2", "op3", "op4", "op5"]
    queue(store, "op6", "by-hand-6", at=clock.now, lane=INTERACTIVE_LANE)
    assert admission.admit(sent) == []  # 7 ready


def test_bulk_failovers_take_turns_at_their_rate_and_a_new_failover_waits_one_turn(store: RunStore) -> None:
    clock, sent = Clock(), Sent()
    admission = Admission(store, Bounds(per_slot=100, max_in_flight=100), clock=clock)
    for i in range(4):
        queue(store, f"a{i}", "bulk-a", at=clock.now, lane=BULK_LANE, groups=4)
        queue(store, f"b{i}", "bulk-b", at=clock.now, lane=BULK_LANE, groups=4)
    assert sorted(admission.admit(sent)) == ["a0", "b0"]  # one each; the next turn is 1/10 s later
    clock.now += 0.05
    queue(store, "single", "one-group", at=clock.now, lane=BULK_LANE)  # another automatic one
    assert admission.admit(sent) == ["single"]
    assert admission.admit(sent) == []
    clock.now = 1_000.0 + 0.1
    assert sorted(admission.admit(sent)) == ["a1", "b1"]


def test_a_run_cancelled_while_queued_is_never_started(store: RunStore) -> None:
    clock, sent = Clock(), Sent()
    admission = Admission(store, Bounds(per_slot=5, max_in_flight=100), clock=clock)
    queue(store, "gone", "gone", at=clock.now)
    queued = store.load("gone")
    assert queued is not None
    # A control on a queued run (here: its end) is committed without putting it in flight.
    paused = queued.model_copy(update={"message": "paused while queued"})
    assert store.commit(paused, expected_version=queued.version) is not None
    assert store.due(before=clock.now + 1) == []
    cancelled = store.load("gone")
    assert cancelled is not None
    ended = cancelled.model_copy(update={"status": RunStatus.CANCELLED, "state": Phase.FAILED})
    assert ended.terminal
    assert store.commit(ended, expected_version=cancelled.version) is not None
    queue(store, "next", "next", at=clock.now + 1)
    clock.now += 1
    assert admission.admit(sent) == ["next"]
    assert sent.starts == ["next"]
    assert admission.prune() == 0  # the cancelled one left the admitted runs at once
    assert admission.waiting() == 0


def test_concurrent_admitters_never_admit_past_the_bound(store: RunStore) -> None:
    clock, sent = Clock(), Sent()
    for i in range(60):
        queue(store, f"r{i:02d}", f"f{i:02d}", at=clock.now)
    admitters = [Admission(store, Bounds(per_slot=7, max_in_flight=100), clock=clock) for _ in range(8)]
    barrier = threading.Barrier(len(admitters))

    def admit(admission: Admission) -> None:
        barrier.wait()
        for _ in range(5):
            admission.admit(sent, most=3)

    threads = [threading.Thread(target=admit, args=(a,)) for a in admitters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent.starts) == [f"r{i:02d}" for i in range(7)]  # exactly the bound, oldest first
    assert admitters[0].waiting() == 53


def test_which_lane_a_run_waits_in() -> None:
    run = new_run(run_id="r", failover=failover(name="f"), group=group(), source_cluster="site-a", now=1.0)
    assert queued_for(run, automatic=False, groups=1, rate=20.0).lane == INTERACTIVE_LANE
    assert queued_for(run, automatic=True, groups=1, rate=20.0).lane == BULK_LANE
    bulk = queued_for(run, automatic=False, groups=100, rate=20.0)
    assert (bulk.lane, bulk.step) == (BULK_LANE, 0.05)


def test_runs_waiting_on_a_countdown_count_towards_the_admitted_bound(store: RunStore) -> None:
    """Ready work alone would admit a whole site of slow waits, whose polls then come due together."""
    clock, sent = Clock(), Sent()
    admission = Admission(store, Bounds(per_slot=2, max_in_flight=100, admitted_per_slot=3), clock=clock)
    for i in range(6):
        queue(store, f"r{i}", f"f{i}", at=clock.now)
    assert admission.admit(sent) == ["r0", "r1"]
    for run_id in ("r0", "r1"):  # both go to wait on a countdown: no ready work left
        run = store.load(run_id)
        assert run is not None
        started = decide(run, Event(kind=EventKind.START), clock.now).run
        dispatch = started.dispatch.model_copy(update={"due_at": clock.now + 30})  # type: ignore[union-attr]
        assert store.commit(started.model_copy(update={"dispatch": dispatch}), expected_version=run.version)
    assert admission.admit(sent) == ["r2"]  # three admitted per slot, one slot
    assert admission.admit(sent) == []


def _queued_runs(port: int) -> dict[str, float]:
    """The samples of ``failover_admission_queued_runs`` the endpoint on ``port`` serves, by lane."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    found = {}
    for line in body.decode().splitlines():
        if line.startswith("failover_admission_queued_runs{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('lane="')[1].split('"')[0]] = float(value)
    return found


def test_the_worker_serves_the_runs_queued_for_admission_per_lane(
    store: RunStore, redis_server_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``failover_admission_queued_runs{lane}``, read from Redis at each scrape by the reader the
    worker's metrics endpoint is given (workers.tasks), from the worker's own settings."""
    monkeypatch.setenv("FAILOVER_REDIS_URL", redis_server_url)
    monkeypatch.setenv("FAILOVER_KEY_PREFIX", prefix)
    monkeypatch.setenv("FAILOVER_INSECURE_DEV", "true")  # the reader opens no run
    from workers import tasks

    # The worker's settings are read once per process: read them again from this test's environment
    # (an earlier test may have imported workers.tasks with another), and forget them afterwards.
    get_settings.cache_clear()
    tasks._site_admission.cache_clear()
    clock = Clock()
    for i in range(3):
        queue(store, f"b{i}", "many", at=clock.now, groups=3)  # one Failover of three groups
    queue(store, "i0", "one", at=clock.now, lane=INTERACTIVE_LANE)
    server, thread = start_metrics_server(
        0, "127.0.0.1", admission_queued=tasks._admission_queued, registry=CollectorRegistry()
    )
    try:
        assert _queued_runs(server.server_port) == {"interactive": 1.0, "bulk": 3.0}
        # The interactive run and the first of the Failover's three go (its next one a turn later).
        admitted = Admission(store, Bounds(per_slot=10, max_in_flight=100), clock=clock).admit(Sent())
        assert sorted(admitted) == ["b0", "i0"]
        assert _queued_runs(server.server_port) == {"interactive": 0.0, "bulk": 2.0}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        tasks._site_admission.cache_clear()
        get_settings.cache_clear()


def test_failoverctl_status_says_how_many_runs_wait_for_admission(
    store: RunStore, redis_server_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAILOVER_REDIS_URL", redis_server_url)
    monkeypatch.setenv("FAILOVER_KEY_PREFIX", prefix)
    monkeypatch.setenv("FAILOVER_RUN_KEY", SANDBOX_RUN_KEY)
    monkeypatch.setenv("COLUMNS", "200")
    clock = Clock()
    for i in range(2):
        queue(store, f"b{i}", "many", at=clock.now, groups=2)
    queue(store, "i0", "one", at=clock.now, lane=INTERACTIVE_LANE)

    shown = CliRunner().invoke(app, ["status"])

    assert shown.exit_code == 0, shown.output
    assert "3 runs queued for admission (interactive 1, bulk 2)" in " ".join(shown.output.split())
    Admission(store, Bounds(per_slot=10, max_in_flight=100), clock=clock).admit(Sent())
    clock.now += 1
    Admission(store, Bounds(per_slot=10, max_in_flight=100), clock=clock).admit(Sent())
    shown = CliRunner().invoke(app, ["status"])
    assert shown.exit_code == 0, shown.output
    assert "runs queued for admission" not in shown.output  # none waits: no line
    assert "b1" in shown.output  # the runs are listed as before
