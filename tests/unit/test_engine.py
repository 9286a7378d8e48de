"""The engine in one process: fakes of our own ports on fakeredis, messages delivered by hand.

These check the engine's contract (ticket guard, compare-and-set, order of effects, redrive)
quickly; tests/e2e runs the same engine through real Celery workers on a real Redis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import fakeredis
import pytest
import structlog

from fsm.decide import Event, EventKind
from fsm.plan import Step, Timing
from fsm.run import RunStatus, new_run
from sandbox.fakes import FakeClusters, FakeCoordination, fake_adapters
from sandbox.stack import sandbox_signer
from tests.factories import all_refs, failover, group
from workers.engine import START_TASK, Engine
from workers.ports import Role
from workers.settings import Settings
from workers.store import RunStore


@dataclass
class Message:
    name: str
    run_id: str
    ticket: int
    countdown: float
    cluster: str | None


@dataclass
class ListSender:
    sent: list[Message] = field(default_factory=list)

    def send(self, name: str, run_id: str, ticket: int, *, countdown: float, cluster: str | None) -> None:
        self.sent.append(Message(name, run_id, ticket, countdown, cluster))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


@dataclass
class Harness:
    engine: Engine
    sender: ListSender
    store: RunStore
    clusters: FakeClusters
    coordination: FakeCoordination
    clock: Clock

    def deliver(self, message: Message) -> object:
        if message.name == START_TASK:
            return self.engine.start(message.run_id)
        return self.engine.run_step(
            Step(message.name.removeprefix("failover.")), message.run_id, message.ticket
        )

    def pump(self, limit: int = 500) -> int:
        """Deliver messages in order until none is left; returns how many were delivered."""
        for count in itertools.count():
            if not self.sender.sent or count >= limit:
                return count
            self.deliver(self.sender.sent.pop(0))
        return limit


@pytest.fixture
def harness(fake_redis: fakeredis.FakeRedis) -> Harness:
    adapters = fake_adapters(fake_redis, "t:", settle_checks=2)
    assert isinstance(adapters.effects, FakeClusters)
    assert isinstance(adapters.coordination, FakeCoordination)
    g = group()
    adapters.effects.load("site-a", all_refs(g), Role.ACTIVE)
    adapters.effects.load("site-b", all_refs(g), Role.PASSIVE)
    adapters.coordination.set_initial_owner(g.key, "site-a")
    settings = Settings(redis_url="redis://unused", timing=Timing(poll_initial=0.1, poll_max=0.1))
    sender, store, clock = ListSender(), RunStore(fake_redis, signer=sandbox_signer(), prefix="t:"), Clock()
    engine = Engine(store, adapters, sender, settings, clock=clock, jitter=lambda: 0.5)
    return Harness(engine, sender, store, adapters.effects, adapters.coordination, clock)


def submit(h: Harness, mode: str = "CONSISTENCY", run_id: str = "run-1") -> str:
    run = new_run(
        run_id=run_id,
        failover=failover(mode=mode),
        group=group(),
        source_cluster="site-a",
        now=h.clock(),
        timing=h.engine.settings.timing,
    )
    assert h.engine.submit(run)
    return run_id


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_a_run_moves_every_object_and_the_active_cluster(harness: Harness, mode: str) -> None:
    run_id = submit(harness, mode)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS, run and run.message
    g = group()
    assert all(harness.clusters.role("site-b", ref) == "active" for ref in all_refs(g))
    assert all(harness.clusters.role("site-a", ref) == "passive" for ref in all_refs(g))
    assert harness.coordination.active_cluster(g.key) == "site-b"
    assert harness.coordination.lock_info(g.key) is None
    [record] = harness.coordination.history(g.key)
    assert (record.outcome, record.source_cluster, record.target_cluster) == ("SUCCESS", "site-a", "site-b")
    assert [e.stage for e in harness.coordination.journal(g.key, run_id)][-1] == "COMPLETION"
    # Every changed object carries the run's fencing token.
    assert {e["epoch"] for e in harness.clusters.timeline()} == {run.token}


def test_the_same_message_twice_advances_the_run_once(harness: Harness) -> None:
    run_id = submit(harness)
    harness.deliver(harness.sender.sent.pop(0))  # start
    message = harness.sender.sent.pop(0)  # validate
    harness.deliver(message)
    after_first = harness.store.load(run_id)
    assert after_first is not None
    assert harness.deliver(message) is None  # the duplicate is recognised before any work
    after_second = harness.store.load(run_id)
    assert after_second == after_first
    assert [m.name for m in harness.sender.sent] == ["failover.acquire_lock"]


def test_a_start_message_delivered_again_after_the_run_finished_is_ignored_and_logged(
    harness: Harness,
) -> None:
    """A copy of the start message left behind (reserved by a worker whose step hung while the sweep
    sent it again elsewhere, tests/chaos/test_reserved_behind_a_hung_step.py) reaches a finished run:
    nothing changes, and the line that says so is logged instead of failing the task."""
    from structlog.testing import LogCapture

    run_id = submit(harness)
    start = harness.sender.sent[0]
    harness.pump()
    finished = harness.store.load(run_id)
    assert finished is not None and finished.status is RunStatus.SUCCESS
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        harness.deliver(start)
    finally:
        structlog.reset_defaults()
    assert harness.store.load(run_id) == finished
    assert harness.sender.sent == []
    [ignored] = [e for e in capture.entries if e["event"] == "event.ignored"]
    assert (ignored["run_id"], ignored["kind"]) == (run_id, "start")


def test_a_commit_that_keeps_losing_its_race_gives_up_and_says_so(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every compare-and-set refused (another writer each time): apply returns None after its
    attempts, logging ``run.commit_contended``, and the run is as the other writer left it."""
    from structlog.testing import LogCapture

    run_id = submit(harness)
    harness.deliver(harness.sender.sent.pop(0))  # start
    run = harness.store.load(run_id)
    assert run is not None
    refused: list[int] = []

    def refuse(signed: object, *, expected_version: int, outgoing: object = None) -> None:
        refused.append(expected_version)

    monkeypatch.setattr(harness.engine.store, "commit", refuse)
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        assert run.dispatch is not None
        event = Event(kind=EventKind.SUCCEEDED, step=Step.VALIDATE, ticket=run.dispatch.ticket)
        assert harness.engine.apply(run, event) is None
    finally:
        structlog.reset_defaults()
    assert len(refused) > 1
    [contended] = [e for e in capture.entries if e["event"] == "run.commit_contended"]
    assert (contended["run_id"], contended["kind"], contended["attempts"]) == (
        run_id,
        "step_succeeded",
        len(refused),
    )


def test_a_message_lost_between_commit_and_send_is_redriven(harness: Harness) -> None:
    run_id = submit(harness)
    harness.pump(limit=4)
    lost = harness.sender.sent.pop(0)
    assert harness.engine.redrive() == []  # not overdue yet
    harness.clock.now += harness.engine.settings.redrive_after + 1
    assert harness.engine.redrive() == [run_id]
    resent = harness.sender.sent[0]
    assert (resent.name, resent.ticket) == (lost.name, lost.ticket)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS
    assert run.dispatch is None


def test_a_lost_start_message_is_redriven(harness: Harness) -> None:
    run_id = submit(harness)
    harness.sender.sent.clear()
    harness.clock.now += harness.engine.settings.redrive_after + 1
    assert harness.engine.redrive() == [run_id]
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS


def test_a_missing_object_fails_the_run_naming_step_cluster_and_object(harness: Harness) -> None:
    g = group()
    harness.clusters.set_fault("make_passive", "site-a", g.workload_refs()[0], "permanent")
    run_id = submit(harness)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert run.message.startswith(
        "failed at step scale_down_workloads, cluster 'site-a', StatefulSet shop/db: StatefulSet shop/db "
        "on cluster 'site-a': injected permanent fault on make_passive"
    )
    # Compensation restored the source: network back on, workloads asked to be active again.
    assert all(harness.clusters.role("site-a", ref) == "active" for ref in all_refs(g))
    assert harness.coordination.active_cluster(g.key) == "site-a"
    assert harness.coordination.lock_info(g.key) is None
    [record] = harness.coordination.history(g.key)
    assert (record.outcome, record.failed_step) == ("FAILED", "scale_down_workloads")


def test_temporary_faults_are_retried_and_the_run_succeeds(harness: Harness) -> None:
    g = group()
    harness.clusters.set_fault("make_active", "site-b", g.volume_refs()[0], "temporary:2")
    run_id = submit(harness)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS
    assert run.steps["promote_volumes"].errors == 2
    assert run.steps["promote_volumes"].attempts == 3


def test_a_held_lock_fails_the_run_at_once_naming_the_holder(harness: Harness) -> None:
    g = group()
    harness.coordination.acquire_lock(
        g.key, holder="other-site", run_id="run-0", lease_seconds=600, now=harness.clock()
    )
    run_id = submit(harness)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert "locked by other-site (run run-0)" in run.message
    assert harness.coordination.lock_info(g.key) is not None  # someone else's lock is left alone
    assert all(harness.clusters.role("site-a", ref) == "active" for ref in all_refs(g))


def test_a_lost_lease_stops_the_run_without_touching_clusters(harness: Harness) -> None:
    g = group()
    run_id = submit(harness)
    harness.pump(limit=5)  # start, validate, acquire_lock, raise_fence, disable_network
    # The worker stalls past its lease (a paused process, a long GC) and another run takes the group.
    harness.clock.now += harness.engine.settings.lease_seconds + 1
    harness.coordination.acquire_lock(
        g.key, holder="intruder", run_id="other", lease_seconds=600, now=harness.clock()
    )
    before = len(harness.clusters.timeline())
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert "lost" in run.message and "another run holds the lock" in run.message
    assert len(harness.clusters.timeline()) == before
    assert harness.coordination.lock_info(g.key).holder == "intruder"  # type: ignore[union-attr]


def test_submitting_the_same_run_id_twice_is_refused(harness: Harness) -> None:
    submit(harness)
    run = new_run(run_id="run-1", failover=failover(), group=group(), source_cluster="site-a", now=1.0)
    assert not harness.engine.submit(run)


def submit_forced(h: Harness, force: bool) -> str:
    run = new_run(
        run_id="lost",
        failover=failover(force=force),
        group=group(),
        source_cluster="site-a",
        now=h.clock(),
        timing=h.engine.settings.timing,
    )
    assert h.engine.submit(run)
    return run.run_id


def test_an_unreachable_source_without_force_fails_at_once_suggesting_force(harness: Harness) -> None:
    harness.clusters.set_fault("*", "site-a", None, "down")
    run_id = submit_forced(harness, force=False)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert run.failure is not None and run.failure.step is Step.VALIDATE
    assert run.steps["validate"].attempts == 3  # a blip is retried briefly, a lost site fails fast
    assert "gave up after 3 attempts: source cluster 'site-a' is unreachable" in run.message
    assert "force: true" in run.message
    assert harness.coordination.active_cluster(group().key) == "site-a"


def test_under_force_a_lost_sources_steps_are_skipped_once_its_heartbeat_is_stale(harness: Harness) -> None:
    from workers.ports import Heartbeat

    g = group()
    harness.coordination.write_heartbeat(g.key, Heartbeat("site-a", "OK", "PRIMARY", at=harness.clock()))
    harness.clusters.set_fault("*", "site-a", None, "down")
    run_id = submit_forced(harness, force=True)
    harness.pump(limit=5)  # start, validate, ..., raise_fence: each reads the source and must cope
    run = harness.store.load(run_id)
    assert run is not None and not run.terminal
    waiting = run.steps.get(run.step_key)
    assert waiting is not None and "heartbeat is only" in waiting.message
    harness.clock.now += 61  # the heartbeat is now older than timeouts.heartbeat (1m)
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS, run.message
    skipped = {key for key, rec in run.steps.items() if rec.outcome == "skipped"}
    assert {
        "disable_network",
        "scale_down_workloads",
        "suspend_flux",
        "wait_scaled_down",
        "demote_volumes",
        "wait_volumes_demoted",
    } <= skipped
    assert (
        "skipped under force: source 'site-a' unreachable, last heartbeat"
        in run.steps["demote_volumes"].message
    )
    assert all(harness.clusters.role("site-b", ref) == "active" for ref in all_refs(g))
    assert harness.coordination.active_cluster(g.key) == "site-b"
    [record] = harness.coordination.history(g.key)
    assert record.force and any(s.startswith("demote_volumes: skipped under force") for s in record.skipped)


def test_a_cronjobs_running_jobs_are_stopped_after_the_grace_period_not_left_running(
    harness: Harness,
) -> None:
    import json

    g = group()
    cronjob = next(ref for ref in g.workload_refs() if ref.kind == "CronJob")
    run_id = submit(harness)
    while True:  # up to the first check of wait_scaled_down
        message = harness.sender.sent.pop(0)
        harness.deliver(message)
        if message.name == "failover.wait_scaled_down":
            break
    # The CronJob's Job keeps running: it would never finish on its own.
    key, field = "t:objects:site-a", f"CronJob/shop/{cronjob.name}"
    obj = json.loads(harness.clusters.client.hget(key, field))
    harness.clusters.client.hset(key, field, json.dumps({**obj, "remaining": 10_000}))
    harness.pump(limit=3)
    run = harness.store.load(run_id)
    assert run is not None and run.steps["wait_scaled_down"].outcome is None
    assert not [e for e in harness.clusters.timeline() if e["op"] == "stop_jobs"]
    harness.clock.now += 160  # past half the time left to the run's 5 minute deadline
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS, run.message
    [stopped] = [e for e in harness.clusters.timeline() if e["op"] == "stop_jobs"]
    assert stopped["cluster"] == "site-a" and stopped["ref"] == f"CronJob/shop/{cronjob.name}"


def test_step_logs_name_the_run_failover_group_and_step(harness: Harness) -> None:
    from structlog.testing import LogCapture

    submit(harness)
    harness.deliver(harness.sender.sent.pop(0))  # start
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        harness.deliver(harness.sender.sent.pop(0))  # validate
    finally:
        structlog.reset_defaults()
    decided = next(e for e in capture.entries if e["event"] == "run.decided")
    assert {k: decided[k] for k in ("failover", "group", "step", "cluster", "run_id")} == {
        "failover": "shop/move-shop",
        "group": "shop/shop",
        "step": "validate",
        "cluster": None,
        "run_id": "run-1",
    }
    assert structlog.contextvars.get_contextvars() == {}  # nothing leaks into the next message


def test_a_returning_site_is_stood_down_and_the_change_recorded(harness: Harness) -> None:
    from fsm.run import new_standdown_run

    g = group()
    # site-b became the owner while site-a was away; site-a comes back still active.
    harness.coordination.client.set(f"t:owner:{g.key.operator_id}:shop:shop", "site-b")
    run = new_standdown_run(
        run_id="sd-1",
        group=g,
        cluster="site-a",
        owner="site-b",
        reason="site-a answers again",
        now=harness.clock(),
        timing=harness.engine.settings.timing,
    )
    assert harness.engine.submit(run)
    harness.pump()
    done = harness.store.load("sd-1")
    assert done is not None and done.status is RunStatus.SUCCESS, done.message
    assert all(harness.clusters.role("site-a", ref) == "passive" for ref in all_refs(g))
    assert all(harness.clusters.role("site-b", ref) == "passive" for ref in all_refs(g))  # untouched
    assert harness.coordination.active_cluster(g.key) == "site-b"
    assert harness.coordination.lock_info(g.key) is None
    [record] = harness.coordination.history(g.key)
    assert record.outcome == "STOOD_DOWN"
    assert record.message.startswith("site-a made passive (site-a answers again): disable_network: 2 of 2")
    assert "VolumeReplication shop/db-data: asked to become passive" in record.message


def test_the_same_run_created_at_two_sites_gets_the_lock_only_once(harness: Harness) -> None:
    # Each site's Redis deduplicates only its own submissions: the second copy has its own nonce.
    other_sender = ListSender()
    other_site = Harness(
        Engine(
            RunStore(harness.store.client, signer=sandbox_signer(), prefix="t2:"),
            harness.engine.adapters,
            other_sender,
            harness.engine.settings,
            clock=harness.clock,
            jitter=lambda: 0.5,
        ),
        other_sender,
        RunStore(harness.store.client, signer=sandbox_signer(), prefix="t2:"),
        harness.clusters,
        harness.coordination,
        harness.clock,
    )
    first = new_run(
        run_id="same",
        failover=failover(),
        group=group(),
        source_cluster="site-a",
        now=harness.clock(),
        timing=harness.engine.settings.timing,
        nonce="aaa",
    )
    assert harness.engine.submit(first)
    assert other_site.engine.submit(first.model_copy(update={"nonce": "bbb"}))
    harness.pump(limit=3)  # start, validate, acquire_lock: site 1's copy holds the lock
    other_site.pump()
    harness.pump()
    mine, theirs = harness.store.load("same"), other_site.store.load("same")
    assert mine is not None and mine.status is RunStatus.SUCCESS, mine.message
    assert theirs is not None and theirs.status is RunStatus.FAILED
    assert theirs.failure is not None and theirs.failure.step is Step.ACQUIRE_LOCK
    assert "same#aaa" in theirs.message


def test_a_redelivered_completion_after_its_transaction_committed_is_a_success(harness: Harness) -> None:
    g = group()
    run_id = submit(harness)
    while harness.sender.sent[0].name != "failover.complete":
        harness.deliver(harness.sender.sent.pop(0))
    run = harness.store.load(run_id)
    assert run is not None and run.token is not None
    # The first delivery committed the DynamoDB transaction, then its worker died before Redis.
    from workers.steps import history_record

    harness.coordination.complete_failover(
        g.key,
        token=run.token,
        expected_owner="site-a",
        new_owner="site-b",
        record=history_record(run, outcome="SUCCESS", now=harness.clock()),
    )
    harness.pump()
    run = harness.store.load(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS, run.message
    assert [h.outcome for h in harness.coordination.history(g.key)] == ["SUCCESS"]


def test_the_redrive_sweep_forgets_runs_that_are_gone_or_finished(harness: Harness) -> None:
    run_id = submit(harness)
    harness.store.client.delete(f"t:run:{run_id}")  # the key expired or was lost
    harness.clock.now += harness.engine.settings.redrive_after + 1
    assert harness.engine.redrive() == []
    assert harness.store.overdue(before=harness.clock.now + 10_000) == []


def _pump_with_controls(h: Harness) -> list[Message]:
    """Deliver messages until none is left; the signs for Flower (``failover.paused``/``resumed``,
    run by workers.tasks, not the engine) are returned in order."""
    signs = []
    while h.sender.sent:
        message = h.sender.sent.pop(0)
        if message.name == "failover.control":
            h.engine.control(message.run_id)
        elif message.name in ("failover.paused", "failover.resumed"):
            signs.append(message)
        else:
            h.deliver(message)
    return signs


def _controls_counted(action: str, outcome: str) -> float:
    from prometheus_client import REGISTRY

    found = REGISTRY.get_sample_value("failover_controls_total", {"action": action, "outcome": outcome})
    return found or 0.0


def test_a_paused_run_keeps_its_lease_and_the_sweep_never_times_it_out(harness: Harness) -> None:
    from fsm.audit import ControlAction
    from workers.control_requests import Asked, request_control

    run_id = submit(harness)
    harness.pump(limit=6)  # lock taken, the source being prepared
    asked = request_control(
        harness.store,
        harness.sender,
        run_id,
        Asked(ControlAction.PAUSE, "alice", "look"),
        clock=harness.clock,
    )
    assert asked.record is not None and asked.refused is None
    counted = {(a, o): _controls_counted(a, o) for a in ("pause", "resume") for o in ("applied", "refused")}
    signs = _pump_with_controls(harness)  # the pending step reports back, then the pause applies
    paused = harness.store.load(run_id)
    assert paused is not None and paused.paused and harness.sender.sent == []
    # Flower is told, by a task whose args name the run and the pause; the counter counts it once.
    assert [(m.name, m.run_id, m.ticket) for m in signs] == [("failover.paused", run_id, asked.record.id)]
    assert _controls_counted("pause", "applied") == counted["pause", "applied"] + 1
    again = request_control(
        harness.store, harness.sender, run_id, Asked(ControlAction.PAUSE, "bob", "twice"), clock=harness.clock
    )
    assert again.refused is not None and "already paused" in again.refused and again.record is None
    key = group().key
    lock = harness.coordination.lock_info(key)
    assert lock is not None
    settings = harness.engine.settings
    for _ in range(4):  # far past the lease, the step's deadline and the run's transitoryState
        harness.clock.now += settings.lease_seconds + settings.timing.wait_timeout + 300
        assert harness.engine.redrive() == []
        renewed = harness.coordination.lock_info(key)
        assert renewed is not None and renewed.expires_at > harness.clock.now, "lease renewed by the sweep"
    assert harness.sender.sent == []  # nothing re-sent while paused
    held = harness.store.load(run_id)
    assert held is not None and held.paused and held.failure is None and held.at_step is paused.at_step
    resumed = request_control(
        harness.store, harness.sender, run_id, Asked(ControlAction.RESUME, "alice", "go"), clock=harness.clock
    )
    assert resumed.record is not None
    signs = _pump_with_controls(harness)
    assert [(m.name, m.ticket) for m in signs] == [("failover.resumed", resumed.record.id)]
    assert _controls_counted("resume", "applied") == counted["resume", "applied"] + 1
    assert _controls_counted("pause", "applied") == counted["pause", "applied"] + 1  # never twice
    done = harness.store.load(run_id)
    assert done is not None and done.status is RunStatus.SUCCESS, done.message
    assert [(c.action.value, c.outcome.value) for c in done.controls] == [
        ("pause", "applied"),
        ("resume", "applied"),
    ]


def _deliver_until(h: Harness, name: str) -> None:
    """Deliver messages (controls included) until the next one is ``name`` (not delivered)."""
    for _ in range(500):
        assert h.sender.sent, f"no message {name} came"
        if h.sender.sent[0].name == name:
            return
        message = h.sender.sent.pop(0)
        if message.name == "failover.control":
            h.engine.control(message.run_id)
        elif message.name not in ("failover.paused", "failover.resumed"):
            h.deliver(message)
    raise AssertionError(f"no message {name} within 500")


def test_a_cancel_racing_the_promotion_waits_for_it_then_is_refused(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The point of no return (CONSISTENCY: promote_volumes) is crossed while a cancel is asked: the
    control message finds the step claimed by a worker and leaves it alone; once the step reported
    back the cancel is refused (past the point), nothing is undone and the run succeeds."""
    from fsm.audit import ControlAction, ControlOutcome
    from workers.control_requests import Asked, request_control

    harness.engine.worker_id = "w1"  # a worker's engine claims the steps it starts
    run_id = submit(harness)
    _deliver_until(harness, "failover.promote_volumes")
    promote = harness.sender.sent.pop(0)
    seen: list[object] = []
    make_active = harness.clusters.make_active

    def promoting(*args: object, **kwargs: object) -> object:
        if not seen:  # mid-step: the operator cancels and the control message is handled at once
            asked = request_control(
                harness.store,
                harness.sender,
                run_id,
                Asked(ControlAction.CANCEL, "alice", "stop"),
                clock=harness.clock,
            )
            seen.append(asked)
            seen.append(harness.engine.control(run_id))  # deferred: the step is claimed
            seen.append(harness.store.load(run_id))
        return make_active(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(harness.clusters, "make_active", promoting)
    harness.deliver(promote)
    asked, deferred, during = seen
    assert asked.record is not None and asked.refused is None  # type: ignore[attr-defined]
    assert deferred is None and during.controls[-1].pending and during.failure is None  # type: ignore[attr-defined]
    after = harness.store.load(run_id)
    assert after is not None and after.failure is None and after.at_step is Step.WAIT_VOLUMES_PROMOTED
    assert after.controls[-1].outcome is ControlOutcome.REFUSED
    assert "point of no return" in after.controls[-1].message
    monkeypatch.undo()
    _pump_with_controls(harness)  # the control message again (a duplicate too) changes nothing
    harness.engine.control(run_id)
    done = harness.store.load(run_id)
    assert done is not None and done.status is RunStatus.SUCCESS, done.message
    assert not any(key.startswith("undo:") for key in done.steps)
    assert [(c.action.value, c.outcome.value) for c in done.controls] == [("cancel", "refused")]
    assert harness.coordination.active_cluster(group().key) == "site-b"


def test_a_control_forged_into_the_run_in_redis_is_never_applied(harness: Harness) -> None:
    """Someone with Redis access writes a forced skip of wait_volumes_demoted into the run (the MAC
    cannot be updated without the run key) and sends the control message: nothing is decided."""

    from tests.security.sealed import fields_of, sealed_value
    from workers.messages import CONTROL_TASK

    run_id = submit(harness)
    _deliver_until(harness, "failover.wait_volumes_demoted")
    before = harness.store.load(run_id)
    assert before is not None
    key = f"t:run:{run_id}"
    document = fields_of(harness.store.client.hget(key, "d") or b"")
    document["controls"] = [
        {
            "id": 1,
            "action": "skip-step",
            "who": "mallory",
            "why": "x",
            "at": 0.0,
            "step": "wait_volumes_demoted",
            "force": True,
            "source": "cli",
        }
    ]
    harness.store.client.hset(key, "d", sealed_value(document))
    harness.sender.send(CONTROL_TASK, run_id, 0, countdown=0.0, cluster=None)
    assert harness.engine.control(run_id) is None
    assert harness.engine.redrive() == []
    assert harness.store.client.hget(key, "d") == sealed_value(document).encode()  # nothing written over it
    assert harness.deliver(harness.sender.sent.pop(0)) is None  # the held wait does nothing either
    assert all(harness.clusters.role("site-b", ref) == Role.PASSIVE.value for ref in all_refs(group()))


def test_a_paused_run_whose_lock_was_taken_never_writes_again(harness: Harness) -> None:
    """While a run is paused its lock is taken by another run (e.g. an operator released it, or the
    lease ran out while no sweep ran): the sweep cannot renew it (logged, nothing else), and on resume
    the held step finds the lease gone: the run ends superseded, nothing undone, no cluster touched."""
    from fsm.audit import ControlAction
    from workers.control_requests import Asked, request_control

    g = group()
    run_id = submit(harness)
    harness.pump(limit=6)
    request_control(
        harness.store,
        harness.sender,
        run_id,
        Asked(ControlAction.PAUSE, "alice", "look"),
        clock=harness.clock,
    )
    _pump_with_controls(harness)
    paused = harness.store.load(run_id)
    assert paused is not None and paused.paused
    info = harness.coordination.lock_info(g.key)
    assert info is not None
    harness.coordination.release_lock(g.key, token=info.token)
    harness.coordination.acquire_lock(
        g.key, holder="intruder", run_id="other", lease_seconds=600, now=harness.clock()
    )
    harness.clock.now += harness.engine.settings.lease_seconds
    assert harness.engine.redrive() == []  # the paused run's lease cannot be renewed: nothing else happens
    assert harness.coordination.lock_info(g.key).run_id == "other"  # type: ignore[union-attr]
    before = len(harness.clusters.timeline())
    resumed = request_control(
        harness.store, harness.sender, run_id, Asked(ControlAction.RESUME, "alice", "go"), clock=harness.clock
    )
    assert resumed.refused is None
    _pump_with_controls(harness)
    done = harness.store.load(run_id)
    assert done is not None and done.status is RunStatus.FAILED, done.message
    assert "another run holds the lock" in done.message or "lost" in done.message, done.message
    assert [a.step.value for a in done.compensation] == ["abort"]  # superseded: nothing undone
    assert len(harness.clusters.timeline()) == before
    assert harness.coordination.lock_info(g.key).holder == "intruder"  # type: ignore[union-attr]


def test_steps_renew_the_lease_at_their_first_write_or_once_half_of_it_has_gone(harness: Harness) -> None:
    """A step that only reads (validate, the waits) makes no DynamoDB call while more than half the
    lease is left; a step that writes confirms the lease once, before its first write; and once half
    has gone every step renews. The run records each renewal's expiry."""
    run_id = submit(harness)
    renewals: list[tuple[str, int]] = []
    while harness.sender.sent:
        message = harness.sender.sent.pop(0)
        before = harness.coordination.calls().get("renew_lease", 0)
        writes = [e for e in harness.clusters.timeline() if e.get("op") != "reached"]
        harness.deliver(message)
        renewed = harness.coordination.calls().get("renew_lease", 0) - before
        wrote = len([e for e in harness.clusters.timeline() if e.get("op") != "reached"]) - len(writes)
        renewals.append((message.name, renewed))
        assert renewed == (1 if wrote else 0), (message.name, renewed, wrote)
    done = harness.store.load(run_id)
    assert done is not None and done.status is RunStatus.SUCCESS
    assert any(r == 0 for _, r in renewals) and any(r == 1 for _, r in renewals)
    assert done.lease_expires_at is not None

    # A slow queue: half the lease has gone since the last renewal; the next step renews at its start.
    back = new_run(
        run_id="run-2",
        failover=failover(target="site-a", name="move-back"),
        group=group(),
        source_cluster="site-b",
        now=harness.clock(),
        timing=harness.engine.settings.timing,
    )
    assert harness.engine.submit(back)
    second = back.run_id
    harness.pump(limit=3)  # start, validate, acquire_lock
    granted = harness.store.load(second)
    assert granted is not None and granted.lease_expires_at is not None
    harness.clock.now += harness.engine.settings.lease_seconds / 2 + 1
    before = harness.coordination.calls().get("renew_lease", 0)
    harness.pump(limit=1)
    assert harness.coordination.calls()["renew_lease"] == before + 1
    renewed = harness.store.load(second)
    assert renewed is not None and renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > granted.lease_expires_at + harness.engine.settings.lease_seconds / 2


def test_a_wait_is_first_checked_a_moment_after_the_step_that_asked_for_the_change(harness: Harness) -> None:
    """No object changes within a round trip: checking at once would only cost a round of reads."""
    submit(harness)
    delays: dict[str, float] = {}
    while harness.sender.sent:
        message = harness.sender.sent.pop(0)
        delays.setdefault(message.name, message.countdown)
        harness.deliver(message)
    first = harness.engine.settings.timing.first_check_delay()
    assert first == harness.engine.settings.timing.poll_initial / 2
    assert delays["failover.wait_scaled_down"] == first
    assert delays["failover.wait_volumes_demoted"] == first
    assert delays["failover.scale_down_workloads"] == 0.0  # effects and coordination at once
    assert delays["failover.validate"] == 0.0
