"""The plan per mode and ``decide``: table-driven, pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fsm.decide import Decision, Event, EventKind, Updates, decide
from fsm.machine import TABLE, InvalidTransition, build_machine, fire, machine_states, transition_table
from fsm.plan import SEQUENCES, Phase, PlanKind, Side, Stage, Step, Timing, build_plan, state_name
from fsm.run import Run, RunStatus, Superseded, new_run
from tests.factories import failover, group

CONSISTENCY_ORDER = [
    "validate", "acquire_lock", "raise_fence",
    "disable_network", "scale_down_workloads", "suspend_flux", "wait_scaled_down",
    "demote_volumes", "wait_volumes_demoted", "mark_volumes_released", "wait_volumes_released",
    "promote_volumes", "wait_volumes_promoted", "verify_volumes",
    "scale_up_workloads", "resume_flux", "wait_ready", "enable_network",
    "complete",
]  # fmt: skip
UPTIME_ORDER = [
    "validate", "acquire_lock", "raise_fence",
    "promote_volumes", "wait_volumes_promoted", "verify_volumes",
    "scale_up_workloads", "resume_flux", "wait_ready", "enable_network",
    "disable_network", "scale_down_workloads", "suspend_flux", "wait_scaled_down",
    "demote_volumes", "wait_volumes_demoted",
    "complete",
]  # fmt: skip

TIMING = Timing(
    poll_initial=1,
    poll_factor=2,
    poll_max=8,
    retry_initial=1,
    retry_max=4,
    max_attempts=3,
    effect_timeout=100,
    wait_timeout=100,
    coordination_timeout=100,
)


def make_run(mode: str = "CONSISTENCY", **group_spec: object) -> Run:
    return new_run(
        run_id="r1",
        failover=failover(mode=mode),
        group=group(**group_spec),
        source_cluster="site-a",
        now=0.0,
        timing=TIMING,
    )


def drive(
    run: Run, outcome: Callable[[Run], Event | None], now: float = 10.0, limit: int = 200
) -> list[Decision]:
    """Feed ``outcome(run)`` for the dispatched step until the run ends; returns every decision."""
    decisions = [decide(run, Event(kind=EventKind.START), now)]
    run = decisions[-1].run
    while not run.terminal and limit:
        limit -= 1
        event = outcome(run)
        assert event is not None
        decisions.append(decide(run, event, now))
        run = decisions[-1].run
    return decisions


def succeed(run: Run) -> Event:
    assert run.dispatch is not None
    return Event(kind=EventKind.SUCCEEDED, step=run.dispatch.step, ticket=run.dispatch.ticket)


def executed(decisions: list[Decision]) -> list[str]:
    return [d.dispatch.step.value for d in decisions if d.dispatch is not None]


@pytest.mark.parametrize(("mode", "order"), [("CONSISTENCY", CONSISTENCY_ORDER), ("UPTIME", UPTIME_ORDER)])
def test_each_mode_runs_its_steps_in_order_and_succeeds(mode: str, order: list[str]) -> None:
    decisions = drive(make_run(mode), succeed)
    final = decisions[-1].run
    assert executed(decisions) == order
    assert final.state is Phase.SUCCEEDED
    assert final.status is RunStatus.SUCCESS
    assert final.message == "moved to site-b"
    assert all(final.steps[s].outcome == "done" for s in order)


def test_consistency_sides_never_touch_the_target_before_the_source_let_go() -> None:
    plan = build_plan(PlanKind.CONSISTENCY, group())
    sides = [p.side for p in plan]
    first_target = sides.index(Side.TARGET)
    assert Side.SOURCE not in sides[first_target:]
    assert plan[first_target].step is Step.PROMOTE_VOLUMES
    assert [p.step for p in plan[first_target - 2 : first_target]] == [
        Step.MARK_VOLUMES_RELEASED,
        Step.WAIT_VOLUMES_RELEASED,
    ]


def test_uptime_brings_the_target_up_before_the_source_goes_down() -> None:
    plan = build_plan(PlanKind.UPTIME, group())
    sides = [p.side for p in plan]
    assert Side.TARGET not in sides[sides.index(Side.SOURCE) :]
    assert {p.stage for p in plan} == {
        Stage.INITIALIZATION,
        Stage.TARGET_ACTIVATION,
        Stage.SOURCE_STANDDOWN,
        Stage.COMPLETION,
    }


def test_steps_without_resources_are_skipped_and_say_why() -> None:
    decisions = drive(make_run(networkResources=[], fluxResources=[]), succeed)
    final = decisions[-1].run
    assert final.status is RunStatus.SUCCESS
    for step in ("disable_network", "enable_network"):
        assert final.steps[step].outcome == "skipped"
        assert final.steps[step].message == "the group has no Ingresses or VirtualServices"
    assert final.steps["suspend_flux"].message == "the group has no HelmReleases or Kustomizations"
    assert "disable_network" not in executed(decisions)
    assert any("skipped disable_network" in d.reason for d in decisions)
    assert final.skipped()[0].startswith("disable_network: ")


def test_a_group_with_only_a_deployment_skips_every_volume_step() -> None:
    decisions = drive(make_run(workloads=[{"kind": "Deployment", "name": "web"}]), succeed)
    ran = executed(decisions)
    assert not [s for s in ran if "volume" in s]
    assert "scale_down_workloads" in ran and "wait_ready" in ran


def test_a_wait_is_polled_with_a_growing_countdown_and_new_tickets() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    while run.dispatch and run.dispatch.step is not Step.WAIT_SCALED_DOWN:
        run = decide(run, succeed(run), 1.0).run
    countdowns, tickets = [], []
    for check in range(5):
        assert run.dispatch is not None
        tickets.append(run.dispatch.ticket)
        d = decide(
            run,
            Event(
                kind=EventKind.WAITING,
                step=run.dispatch.step,
                ticket=run.dispatch.ticket,
                message=f"2 pods left ({check})",
            ),
            2.0 + check,
        )
        assert d.dispatch is not None and d.run.state is Step.WAIT_SCALED_DOWN
        countdowns.append(d.dispatch.countdown)
        run = d.run
    assert countdowns == [1, 2, 4, 8, 8]
    assert len(set(tickets)) == 5
    assert run.steps["wait_scaled_down"].checks == 5
    assert run.steps["wait_scaled_down"].message == "2 pods left (4)"


def test_a_stale_or_duplicate_message_changes_nothing() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    first = succeed(run)
    advanced = decide(run, first, 1.0)
    assert advanced.changed
    again = decide(advanced.run, first, 1.5)
    assert not again.changed
    assert "stale message for validate" in again.reason
    assert again.run is advanced.run


def test_starting_twice_is_a_no_op() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    assert not decide(run, Event(kind=EventKind.START), 1.0).changed


def test_a_wait_past_its_deadline_fails_the_run_naming_the_step() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    while run.dispatch and run.dispatch.step is not Step.WAIT_VOLUMES_PROMOTED:
        run = decide(run, succeed(run), 1.0).run
    assert run.dispatch is not None
    wait = Event(
        kind=EventKind.WAITING,
        step=run.dispatch.step,
        ticket=run.dispatch.ticket,
        started_at=1.0,
        message="db-data is Secondary",
    )
    d = decide(run, wait, 200.0)
    assert d.run.failure is not None
    assert d.run.failure.step is Step.WAIT_VOLUMES_PROMOTED
    assert d.run.failure.cluster == "site-b"
    assert "step deadline of 100s: db-data is Secondary" in d.run.message


def test_temporary_failures_back_off_then_give_up() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    run = decide(run, succeed(run), 1.0).run
    run = decide(run, succeed(run), 1.0).run
    run = decide(run, succeed(run), 1.0).run  # the fence raised; now disabling the network on the source
    delays = []
    for attempt in range(3):
        assert run.dispatch is not None
        d = decide(
            run,
            Event(
                kind=EventKind.TEMPORARY_FAILURE,
                step=run.dispatch.step,
                ticket=run.dispatch.ticket,
                message="503 from the API server",
                jitter=0.0,
                cluster="site-a",
            ),
            2.0 + attempt,
        )
        run = d.run
        if attempt < 2:
            assert d.dispatch is not None
            delays.append(d.dispatch.countdown)
            assert f"attempt {attempt + 1} of 3 failed (503 from the API server)" in d.reason
    assert delays == [0.5, 1.0]
    assert run.failure is not None and run.failure.step is Step.DISABLE_NETWORK
    assert "gave up after 3 attempts: 503 from the API server" in run.message
    assert run.state is Phase.COMPENSATING


def test_retry_after_from_the_server_is_honoured() -> None:
    assert TIMING.retry_delay(1, 0.0, retry_after=7.0) == 7.0
    assert TIMING.retry_delay(5, 0.999) <= TIMING.retry_max


def fail_at(step: Step, *, superseded: Superseded | None = None) -> Callable[[Run], Event]:
    def outcome(run: Run) -> Event:
        assert run.dispatch is not None
        if run.dispatch.step is step and run.state is not Phase.COMPENSATING:
            return Event(
                kind=EventKind.PERMANENT_FAILURE,
                step=step,
                ticket=run.dispatch.ticket,
                message="boom",
                obj="StatefulSet shop/db",
                superseded=superseded,
            )
        return succeed(run)

    return outcome


def test_a_consistency_failure_before_promotion_restores_the_source() -> None:
    decisions = drive(make_run(), fail_at(Step.WAIT_VOLUMES_DEMOTED))
    final = decisions[-1].run
    assert final.status is RunStatus.FAILED
    assert final.message.startswith(
        "failed at step wait_volumes_demoted, cluster 'site-a', StatefulSet shop/db: boom"
    )
    undo = [(a.step.value, a.cluster) for a in final.compensation]
    assert undo == [
        ("promote_volumes", "site-a"), ("wait_volumes_promoted", "site-a"),
        ("resume_flux", "site-a"),
        ("scale_up_workloads", "site-a"), ("wait_ready", "site-a"),
        ("enable_network", "site-a"),
        ("abort", None),
    ]  # fmt: skip
    assert all(final.steps[f"undo:{i}:{s}"].outcome == "done" for i, (s, _) in enumerate(undo))


def test_a_consistency_failure_after_promotion_started_undoes_nothing() -> None:
    final = drive(make_run(), fail_at(Step.WAIT_VOLUMES_PROMOTED))[-1].run
    assert [a.step for a in final.compensation] == [Step.ABORT]
    assert "could leave two writers" in final.compensation[0].because
    assert final.status is RunStatus.FAILED


def test_an_uptime_failure_on_the_target_stands_the_target_down_again() -> None:
    final = drive(make_run("UPTIME"), fail_at(Step.WAIT_READY))[-1].run
    undo = [(a.step.value, a.cluster) for a in final.compensation]
    assert undo == [
        ("suspend_flux", "site-b"),
        ("scale_down_workloads", "site-b"), ("wait_scaled_down", "site-b"),
        ("demote_volumes", "site-b"), ("wait_volumes_demoted", "site-b"),
        ("abort", None),
    ]  # fmt: skip


def test_a_lost_lease_undoes_nothing() -> None:
    final = drive(make_run(), fail_at(Step.SCALE_DOWN_WORKLOADS, superseded=Superseded.LEASE_LOST))[-1].run
    assert [a.step for a in final.compensation] == [Step.ABORT]
    assert "lease was lost" in final.compensation[0].because


def test_a_failing_undo_does_not_stop_the_others() -> None:
    def outcome(run: Run) -> Event:
        assert run.dispatch is not None
        if run.state is Phase.COMPENSATING and run.dispatch.step is Step.SCALE_UP_WORKLOADS:
            return Event(
                kind=EventKind.PERMANENT_FAILURE,
                step=run.dispatch.step,
                ticket=run.dispatch.ticket,
                message="forbidden",
            )
        return fail_at(Step.DEMOTE_VOLUMES)(run)

    final = drive(make_run(), outcome)[-1].run
    assert final.status is RunStatus.FAILED
    assert "undo failed at step scale_up_workloads, cluster 'site-a': forbidden" in final.message
    assert final.steps[f"undo:{len(final.compensation) - 1}:abort"].outcome == "done"


def test_a_run_past_its_transitory_timeout_fails_and_compensates() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    run = decide(run, succeed(run), 1.0).run
    run = decide(run, succeed(run), 2.0).run
    d = decide(run, succeed(run), 301.0)
    assert d.run.state is Phase.COMPENSATING
    assert "transitoryState timeout of 300s" in d.run.message


def test_lock_token_and_replicas_flow_into_the_run() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    assert run.dispatch is not None
    run = decide(
        run,
        Event(
            kind=EventKind.SUCCEEDED,
            step=Step.VALIDATE,
            ticket=run.dispatch.ticket,
            updates=Updates(replicas={"db": 3}),
        ),
        1.0,
    ).run
    assert run.dispatch is not None
    run = decide(
        run,
        Event(
            kind=EventKind.SUCCEEDED,
            step=Step.ACQUIRE_LOCK,
            ticket=run.dispatch.ticket,
            updates=Updates(token=42, lease_expires_at=61.0),
        ),
        2.0,
    ).run
    assert (run.token, run.replicas, run.lease_expires_at) == (42, {"db": 3}, 61.0)


def test_stage_boundaries_produce_numbered_journal_marks() -> None:
    decisions = drive(make_run(), succeed)
    marks = [m for d in decisions for m in d.journal]
    assert [m.stage for m in marks] == [
        Stage.INITIALIZATION,
        Stage.SOURCE_PREPARATION,
        Stage.VOLUME_TRANSITION,
        Stage.TARGET_ACTIVATION,
        Stage.COMPLETION,
    ]
    assert [m.sequence for m in marks] == [1, 2, 3, 4, 5]


def test_a_redrive_resends_the_same_ticket() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    assert run.dispatch is not None
    d = decide(run, Event(kind=EventKind.REDRIVE, step=run.dispatch.step, ticket=run.dispatch.ticket), 50.0)
    assert d.dispatch is not None
    assert (d.dispatch.ticket, d.dispatch.redriven) == (run.dispatch.ticket, 1)


def redrive(run: Run, now: float) -> Decision:
    assert run.dispatch is not None
    return decide(run, Event(kind=EventKind.REDRIVE, step=run.dispatch.step, ticket=run.dispatch.ticket), now)


def test_a_message_nobody_processes_fails_the_run_at_its_deadline() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    d = redrive(run, 301.0)  # past timeouts.transitoryState (5m) and nobody took the message
    assert d.run.state is Phase.COMPENSATING
    assert d.run.failure is not None and d.run.failure.step is Step.VALIDATE
    assert "transitoryState timeout: its message for validate was not processed" in d.run.message


def test_a_message_redriven_too_often_fails_the_step() -> None:
    from fsm.decide import MAX_REDRIVES

    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    for attempt in range(MAX_REDRIVES):
        run = redrive(run, 1.0 + attempt).run
    d = redrive(run, 20.0)
    assert d.run.state is Phase.COMPENSATING and "no worker processed it" in d.run.message


def test_the_point_of_no_return_counts_even_when_its_step_was_skipped() -> None:
    # UPTIME without network resources: disable_network is skipped, then the source stand-down fails.
    final = drive(make_run("UPTIME", networkResources=[]), fail_at(Step.SCALE_DOWN_WORKLOADS))[-1].run
    assert [a.step for a in final.compensation] == [Step.ABORT]


def test_a_late_success_still_hands_its_lock_to_the_run() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    run = decide(run, succeed(run), 1.0).run
    assert run.dispatch is not None and run.dispatch.step is Step.ACQUIRE_LOCK
    late = Event(
        kind=EventKind.SUCCEEDED,
        step=Step.ACQUIRE_LOCK,
        ticket=run.dispatch.ticket,
        updates=Updates(token=7, lease_expires_at=400.0),
    )
    d = decide(run, late, 305.0)
    assert d.run.state is Phase.COMPENSATING
    assert d.run.token == 7  # so ABORT releases the lock this run holds


def test_the_error_budget_counts_consecutive_failures_only() -> None:
    run = decide(make_run(), Event(kind=EventKind.START), 0.0).run
    while run.dispatch and run.dispatch.step is not Step.WAIT_SCALED_DOWN:
        run = decide(run, succeed(run), 1.0).run
    for round_ in range(4):  # 4 x (2 errors, then a good check): 8 errors in all, budget 3
        for _ in range(2):
            assert run.dispatch is not None
            run = decide(
                run,
                Event(
                    kind=EventKind.TEMPORARY_FAILURE,
                    step=run.dispatch.step,
                    ticket=run.dispatch.ticket,
                    message="503",
                ),
                2.0 + round_,
            ).run
        assert run.dispatch is not None
        run = decide(
            run,
            Event(
                kind=EventKind.WAITING,
                step=run.dispatch.step,
                ticket=run.dispatch.ticket,
                message="pods left",
            ),
            2.5 + round_,
        ).run
    assert run.state is Step.WAIT_SCALED_DOWN and run.failure is None


def test_downtime_is_measured_from_network_off_to_network_on() -> None:
    run = make_run()
    now = iter(range(100))
    run = decide(run, Event(kind=EventKind.START), next(now)).run
    while not run.terminal:
        run = decide(run, succeed(run), float(next(now))).run
    off, on = run.steps["disable_network"], run.steps["enable_network"]
    assert run.downtime_seconds() == (on.finished_at or 0) - (off.started_at or 0) > 0
    uptime = make_run("UPTIME")
    uptime = decide(uptime, Event(kind=EventKind.START), 0.0).run
    while not uptime.terminal:
        uptime = decide(uptime, succeed(uptime), float(next(now))).run
    assert uptime.downtime_seconds() == 0.0


@pytest.mark.parametrize("kind", list(PlanKind))
def test_the_machine_refuses_events_that_its_table_lacks(kind: PlanKind) -> None:
    with pytest.raises(InvalidTransition, match="no transition 'step_failed' from PENDING"):
        fire(kind, Phase.PENDING, EventKind.PERMANENT_FAILURE)
    with pytest.raises(InvalidTransition):
        fire(kind, Phase.SUCCEEDED, EventKind.SUCCEEDED)
    steps = [s for s, _, _ in SEQUENCES[kind]]
    assert len({t["trigger"] for t in transition_table(kind)}) == 8
    assert fire(kind, steps[-1], EventKind.SUCCEEDED) is Phase.SUCCEEDED
    machine = build_machine(kind)
    with pytest.raises(AttributeError):  # auto_transitions=False: no shortcut past the plan
        machine.model.to_SUCCEEDED()


@pytest.mark.parametrize("kind", list(PlanKind))
def test_the_compiled_table_agrees_with_the_machine_on_every_state_and_event(kind: PlanKind) -> None:
    """decide() looks transitions up in TABLE; the card's machine is the truth. Fire every event from
    every state on a real transitions machine and compare."""
    from transitions import MachineError

    for state in machine_states(kind):
        for event in EventKind:
            machine = build_machine(kind)
            machine.set_state(state_name(state))
            try:
                machine.model.trigger(event.value)
                expected = machine.model.state
            except MachineError:
                expected = None
            got = TABLE[kind].get((state, event))
            assert (state_name(got) if got is not None else None) == expected, (state, event)
