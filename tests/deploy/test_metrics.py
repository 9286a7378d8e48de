"""workers.metrics: counts derived from committed run values, served over HTTP, summed across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
from prometheus_client import CollectorRegistry

from fsm.decide import Event, EventKind, Updates, decide
from fsm.models import FailoverMode
from fsm.plan import Step, Timing
from fsm.run import Run, new_run, new_standdown_run
from sandbox.fakes import FakeClusters, FakeCoordination, fake_adapters
from sandbox.stack import sandbox_signer
from tests.factories import all_refs, failover, group
from workers.engine import START_TASK, Engine
from workers.metrics import (
    Metrics,
    MetricsObserver,
    decided_at,
    set_heartbeat_age,
    start_metrics_server,
    step_label,
)
from workers.ports import Role
from workers.settings import Settings
from workers.store import RunStore

TIMING = Timing(
    poll_initial=1, poll_factor=2, poll_max=8, retry_initial=1, retry_max=4, max_attempts=3,
    effect_timeout=100, wait_timeout=100, coordination_timeout=100,
)  # fmt: skip
STEP_SECONDS = 0.25


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


Outcome = Callable[[Run, float], Event]


def make_run(mode: str = "CONSISTENCY", run_id: str = "r1", **group_spec: object) -> Run:
    return new_run(
        run_id=run_id,
        failover=failover(mode=mode),
        group=group(**group_spec),
        source_cluster="site-a",
        now=1_000.0,
        timing=TIMING,
    )


def succeed(run: Run, now: float) -> Event:
    """The dispatched step is done (taking the lock hands back a fencing token, as the step does)."""
    assert run.dispatch is not None
    step = run.dispatch.step
    return Event(
        kind=EventKind.SUCCEEDED,
        step=step,
        ticket=run.dispatch.ticket,
        started_at=now - STEP_SECONDS,
        updates=Updates(token=7, lease_expires_at=now + 90) if step is Step.ACQUIRE_LOCK else None,
    )


def committed(run: Run, outcome: Outcome, clock: Clock, limit: int = 200) -> Iterator[Run]:
    """Every committed value of ``run`` from START to the end, as the store hands them out (version+1)."""
    decision = decide(run, Event(kind=EventKind.START), clock())
    run = decision.run.model_copy(update={"version": run.version + 1})
    yield run
    while not run.terminal and limit:
        limit -= 1
        now = clock()
        decision = decide(run, outcome(run, now), now)
        if decision.changed:
            run = decision.run.model_copy(update={"version": run.version + 1})
            yield run


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def observed(runs: Iterator[Run] | list[Run], registry: CollectorRegistry) -> list[Run]:
    observer = MetricsObserver(Metrics(registry))
    values = list(runs)
    for value in values:
        observer.observe(value, "reason")
    return values


def executed_steps(run: Run) -> list[str]:
    return [p.step.value for p in run.plan if p.skip_reason is None]


# --- derived from run values ---------------------------------------------------------------------


def test_a_successful_run_counts_once_per_run_and_per_step() -> None:
    registry = CollectorRegistry()
    runs = observed(committed(make_run(), succeed, Clock()), registry)
    final = runs[-1]
    mode = "CONSISTENCY"
    assert sample(registry, "failover_runs_started_total", mode=mode) == 1
    assert sample(registry, "failover_runs_total", mode=mode, outcome="success") == 1
    assert sample(registry, "failover_runs_total", mode=mode, outcome="failed") == 0
    assert sample(registry, "failover_run_duration_seconds_count", mode=mode, outcome="success") == 1
    assert sample(registry, "failover_run_duration_seconds_sum", mode=mode, outcome="success") == (
        final.total_seconds()
    )
    steps = executed_steps(final)
    assert len(steps) == 19
    for step in steps:
        assert sample(registry, "failover_steps_total", mode=mode, step=step, outcome="done") == 1, step
        assert sample(registry, "failover_step_duration_seconds_count", mode=mode, step=step) == 1, step
        assert sample(registry, "failover_step_duration_seconds_sum", mode=mode, step=step) == STEP_SECONDS
    downtime = final.downtime_seconds()
    assert downtime is not None and downtime > 0
    assert sample(registry, "failover_downtime_seconds_count", mode=mode) == 1
    assert sample(registry, "failover_downtime_seconds_sum", mode=mode) == downtime
    assert sample(registry, "failover_lock_held", group="shop/shop") == 0


def test_the_lock_gauge_follows_the_token() -> None:
    registry = CollectorRegistry()
    observer = MetricsObserver(Metrics(registry))
    held = []
    for value in committed(make_run(), succeed, Clock()):
        observer.observe(value, "reason")
        held.append(sample(registry, "failover_lock_held", group="shop/shop"))
    # validate (no token yet), then acquire_lock done: held until the run completes.
    assert held[0] == 0 and held[1] == 0
    assert set(held[2:-1]) == {1}
    assert held[-1] == 0


def test_skipped_steps_are_counted_as_skipped_without_a_duration() -> None:
    registry = CollectorRegistry()
    runs = observed(
        committed(make_run(**{"networkResources": [], "fluxResources": []}), succeed, Clock()), registry
    )
    skipped = [key for key, record in runs[-1].steps.items() if record.outcome == "skipped"]
    assert sorted(skipped) == ["disable_network", "enable_network", "resume_flux", "suspend_flux"]
    for step in skipped:
        assert sample(registry, "failover_steps_total", mode="CONSISTENCY", step=step, outcome="skipped") == 1
        assert sample(registry, "failover_step_duration_seconds_count", mode="CONSISTENCY", step=step) == 0
    assert sample(registry, "failover_downtime_seconds_count", mode="CONSISTENCY") == 0


def test_waits_and_retries_count_when_the_step_finishes() -> None:
    """Two temporary failures and two polls on steps that then succeed: 2 retries, one step each."""
    failures = {"left": 2}
    polls = {"left": 2}

    def outcome(run: Run, now: float) -> Event:
        assert run.dispatch is not None
        step, ticket = run.dispatch.step, run.dispatch.ticket
        if step is Step.DISABLE_NETWORK and failures["left"]:
            failures["left"] -= 1
            return Event(
                kind=EventKind.TEMPORARY_FAILURE, step=step, ticket=ticket, message="503", jitter=0.0
            )
        if step is Step.WAIT_SCALED_DOWN and polls["left"]:
            polls["left"] -= 1
            return Event(kind=EventKind.WAITING, step=step, ticket=ticket, message="2 pods left")
        return succeed(run, now)

    registry = CollectorRegistry()
    observer = MetricsObserver(Metrics(registry))
    retries_seen = []
    for value in committed(make_run(), outcome, Clock()):
        observer.observe(value, "reason")
        retries_seen.append(sample(registry, "failover_step_retries_total", step="disable_network"))
    assert retries_seen[-1] == 2
    assert retries_seen.count(0) >= 3, "nothing counted while the step was still retrying"
    assert sample(registry, "failover_step_retries_total", step="wait_scaled_down") == 0
    for step in ("disable_network", "wait_scaled_down"):
        assert sample(registry, "failover_steps_total", mode="CONSISTENCY", step=step, outcome="done") == 1
        assert sample(registry, "failover_step_duration_seconds_count", mode="CONSISTENCY", step=step) == 1


def test_a_failed_run_counts_the_failure_and_its_undo_actions() -> None:
    def outcome(run: Run, now: float) -> Event:
        assert run.dispatch is not None
        if run.dispatch.step is Step.WAIT_VOLUMES_DEMOTED and run.failure is None:
            return Event(
                kind=EventKind.PERMANENT_FAILURE,
                step=run.dispatch.step,
                ticket=run.dispatch.ticket,
                message="boom",
            )
        return succeed(run, now)

    registry = CollectorRegistry()
    runs = observed(committed(make_run(), outcome, Clock()), registry)
    final = runs[-1]
    mode = "CONSISTENCY"
    assert sample(registry, "failover_runs_total", mode=mode, outcome="failed") == 1
    assert sample(registry, "failover_runs_total", mode=mode, outcome="success") == 0
    assert (
        sample(registry, "failover_steps_total", mode=mode, step="wait_volumes_demoted", outcome="failed")
        == 1
    )
    undo = [step_label(key) for key in final.steps if key.startswith("undo:")]
    assert "undo:abort" in undo and "undo:scale_up_workloads" in undo
    for label in undo:
        expected = float(undo.count(label))
        assert sample(registry, "failover_steps_total", mode=mode, step=label, outcome="done") == expected
    assert sample(registry, "failover_downtime_seconds_count", mode=mode) == 0
    assert sample(registry, "failover_lock_held", group="shop/shop") == 0


def test_the_same_committed_value_is_counted_once_and_older_ones_are_ignored() -> None:
    registry = CollectorRegistry()
    observer = MetricsObserver(Metrics(registry))
    runs = list(committed(make_run(), succeed, Clock()))
    for value in runs:
        observer.observe(value, "reason")
        observer.observe(value, "reason again")
    for value in runs[:5]:
        observer.observe(value, "late")
    assert sample(registry, "failover_runs_total", mode="CONSISTENCY", outcome="success") == 1
    assert sample(registry, "failover_steps_total", mode="CONSISTENCY", step="validate", outcome="done") == 1


def test_decisions_observed_by_different_processes_count_the_same() -> None:
    """Consecutive decisions of a run land in different worker processes: each has its own observer
    with no memory of the run, and the totals must still be exact."""
    runs = list(committed(make_run(), succeed, Clock()))
    one, many = CollectorRegistry(), CollectorRegistry()
    observed(runs, one)
    shared = Metrics(many)
    for value in runs:
        MetricsObserver(shared).observe(value, "reason")

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created")  # when each series was first seen, not a count
        }

    expected = samples(one)
    assert len(expected) > 50
    assert samples(many) == expected


def test_memory_is_bounded() -> None:
    observer = MetricsObserver(Metrics(CollectorRegistry()), memory=3)
    for index in range(10):
        run = make_run(run_id=f"r{index}")
        observer.observe(next(committed(run, succeed, Clock())), "started")
    assert len(observer._seen) == 3


def test_the_decision_time_is_read_back_exactly() -> None:
    clock = Clock()
    for value in committed(make_run(mode="UPTIME"), succeed, clock):
        if value.dispatch is not None and value.dispatch.countdown == 0:
            assert decided_at(value) == value.dispatch.due_at
    assert decided_at(value) == value.finished_at == clock.now


def test_heartbeat_age_is_set_per_group_and_cluster() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    set_heartbeat_age("shop/shop", "site-a", 12.5, metrics)
    set_heartbeat_age("shop/shop", "site-b", 3.0, metrics)
    set_heartbeat_age("pay/pay", "site-a", 40.0, metrics)  # another group's heartbeat on the same site
    set_heartbeat_age("shop/shop", "site-a", 14.0, metrics)
    age = "failover_cluster_heartbeat_age_seconds"
    assert sample(registry, age, group="shop/shop", cluster="site-a") == 14.0
    assert sample(registry, age, group="shop/shop", cluster="site-b") == 3.0
    assert sample(registry, age, group="pay/pay", cluster="site-a") == 40.0


# --- through the engine --------------------------------------------------------------------------


def test_the_engine_feeds_the_observer_a_full_run(fake_redis: fakeredis.FakeRedis) -> None:
    adapters = fake_adapters(fake_redis, "m:", settle_checks=2)
    assert isinstance(adapters.effects, FakeClusters)
    assert isinstance(adapters.coordination, FakeCoordination)
    g = group()
    adapters.effects.load("site-a", all_refs(g), Role.ACTIVE)
    adapters.effects.load("site-b", all_refs(g), Role.PASSIVE)
    adapters.coordination.set_initial_owner(g.key, "site-a")
    ingress = next(ref for ref in g.network_refs() if ref.kind == "Ingress")
    adapters.effects.set_fault("make_passive", "site-a", ingress, "temporary:2")
    registry = CollectorRegistry()
    adapters.observers.append(MetricsObserver(Metrics(registry)))

    sent: list[tuple[str, str, int]] = []

    class Sender:
        def send(self, name: str, run_id: str, ticket: int, *, countdown: float, cluster: str | None) -> None:
            sent.append((name, run_id, ticket))

    settings = Settings(redis_url="redis://unused", timing=Timing(poll_initial=0.1, poll_max=0.1))
    store = RunStore(fake_redis, signer=sandbox_signer(), prefix="m:")
    engine = Engine(store, adapters, Sender(), settings, clock=Clock(), jitter=lambda: 0.5)
    run = new_run(run_id="e1", failover=failover(), group=g, source_cluster="site-a", now=1_000.0)
    assert engine.submit(run)
    for _ in range(500):
        if not sent:
            break
        name, run_id, ticket = sent.pop(0)
        if name == START_TASK:
            engine.start(run_id)
        else:
            engine.run_step(Step(name.removeprefix("failover.")), run_id, ticket)
    final = store.load("e1")
    assert final is not None and final.terminal
    mode = FailoverMode.CONSISTENCY.value
    assert sample(registry, "failover_runs_total", mode=mode, outcome="success") == 1
    assert sample(registry, "failover_step_retries_total", step="disable_network") == 2
    assert sample(registry, "failover_steps_total", mode=mode, step="wait_scaled_down", outcome="done") == 1
    assert sample(registry, "failover_downtime_seconds_count", mode=mode) == 1
    total_done = sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "failover_steps_total" and s.labels["outcome"] == "done"
    )
    assert total_done == len(executed_steps(final))


# --- serving -------------------------------------------------------------------------------------


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def test_the_server_serves_the_metrics_and_the_queue_depth() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    set_heartbeat_age("shop/shop", "site-a", 7.0, metrics)
    depths = {"failover": 3, "failover.site-b": 0}
    server, thread = start_metrics_server(0, "127.0.0.1", queue_depth=lambda: depths, registry=registry)
    try:
        body = _scrape(server.server_port)
        assert 'failover_queue_depth{queue="failover"} 3.0' in body
        assert 'failover_queue_depth{queue="failover.site-b"} 0.0' in body
        assert 'failover_cluster_heartbeat_age_seconds{cluster="site-a",group="shop/shop"} 7.0' in body
        depths["failover"] = 9
        assert 'failover_queue_depth{queue="failover"} 9.0' in _scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_failing_queue_reader_drops_its_samples_not_the_scrape() -> None:
    registry = CollectorRegistry()
    Metrics(registry)

    def broken() -> dict[str, int]:
        raise ConnectionError("redis is down")

    server, thread = start_metrics_server(0, "127.0.0.1", queue_depth=broken, registry=registry)
    try:
        body = _scrape(server.server_port)
        assert "# TYPE failover_queue_depth gauge" in body
        assert "failover_queue_depth{" not in body
        assert "# TYPE failover_runs_total counter" in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from prometheus_client import generate_latest
    from workers.metrics import (
        MetricsObserver, clear_multiprocess_dir, default_metrics, mark_process_dead, serving_registry,
        set_heartbeat_age,
    )
    from tests.deploy.test_metrics import Clock, committed, make_run, succeed

    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    (directory / "counter_99999.db").write_bytes(b"stale")   # left by a previous container
    clear_multiprocess_dir()
    assert not list(directory.iterdir())
    for index in range(2):   # two prefork pool processes, one after the other, each taking a run
        pid = os.fork()
        if pid == 0:
            observer = MetricsObserver()
            for value in committed(make_run(run_id=f"r{index}"), succeed, Clock()):
                observer.observe(value, "reason")
            set_heartbeat_age("shop/shop", "site-a", 10.0 + index)
            mark_process_dead(os.getpid())
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    sys.stdout.write(generate_latest(serving_registry()).decode())
    """
)


def test_prefork_processes_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'failover_runs_total{mode="CONSISTENCY",outcome="success"} 2.0' in lines
    assert 'failover_steps_total{mode="CONSISTENCY",outcome="done",step="validate"} 2.0' in lines
    # "mostrecent": the value the last process set, not a sum, and kept after that process exited.
    assert 'failover_cluster_heartbeat_age_seconds{cluster="site-a",group="shop/shop"} 11.0' in lines


def test_a_stand_down_is_counted_as_standdown_not_as_a_failover_mode() -> None:
    registry = CollectorRegistry()
    run = new_standdown_run(
        run_id="sd1", group=group(), cluster="site-a", owner="site-b", reason="came back", now=1_000.0
    )
    observed(committed(run, succeed, Clock()), registry)
    assert sample(registry, "failover_runs_started_total", mode="STANDDOWN") == 1
    assert sample(registry, "failover_runs_total", mode="STANDDOWN", outcome="success") == 1
    assert sample(registry, "failover_runs_started_total", mode="CONSISTENCY") == 0
