"""The predicted RTO (fsm.forecast), a run's timeline (fsm.timeline) and its report (fsm.report): pure
functions checked on known figures."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from fsm.forecast import forecast, group_forecast, percentile
from fsm.plan import Phase, Stage, Step
from fsm.report import Verdict, drill_report, judge, report_from_history, report_from_run
from fsm.run import Run, RunStatus, StepRecord, new_run
from fsm.timeline import (
    MAX_ENTRIES,
    StepTiming,
    decode,
    downtime_window,
    encode,
    stage_durations,
    timeline_of,
)
from tests.factories import failover, group

T0 = 1_000_000.0


@dataclass(frozen=True)
class Record:
    """A history record as the forecast and the report read it."""

    mode: str
    outcome: str
    started_at: float
    finished_at: float
    timeline: tuple[StepTiming, ...] = ()
    run_id: str = "r"
    failover: str = "shop/move"
    group: str = "shop/shop"
    source_cluster: str = "site-a"
    target_cluster: str = "site-b"
    message: str = ""
    drill: bool = False


def _stages(prep: float, act: float) -> tuple[StepTiming, ...]:
    return (
        StepTiming("scale_down_workloads", "scale_down_workloads", "SOURCE_PREPARATION", "source", 0.0, prep),
        StepTiming(
            "scale_up_workloads", "scale_up_workloads", "TARGET_ACTIVATION", "target", prep, prep + act
        ),
    )


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0  # rank ceil(10) = 10
    assert percentile(values, 95) == 19.0  # rank ceil(19) = 19
    assert percentile([7.0], 95) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # sorted first


def test_forecast_per_mode_from_a_seeded_history() -> None:
    # CONSISTENCY totals 10, 20, ..., 100 s; stage SOURCE_PREPARATION i s and TARGET_ACTIVATION 2i s.
    history = [
        Record("CONSISTENCY", "SUCCESS", T0, T0 + 10.0 * i, _stages(float(i), 2.0 * i)) for i in range(1, 11)
    ]
    history += [
        Record("CONSISTENCY", "FAILED", T0, T0 + 999.0),  # failures are not counted
        Record("STANDDOWN", "STOOD_DOWN", T0, T0 + 999.0),
    ]
    predicted = forecast(history, objective=60.0)
    consistency = predicted.mode("CONSISTENCY")
    assert consistency.runs == 10
    assert consistency.total is not None
    assert (consistency.total.p50, consistency.total.p95) == (50.0, 100.0)
    stages = dict(consistency.stages)
    assert (stages["SOURCE_PREPARATION"].p50, stages["SOURCE_PREPARATION"].p95) == (5.0, 10.0)
    assert (stages["TARGET_ACTIVATION"].p50, stages["TARGET_ACTIVATION"].p95) == (10.0, 20.0)
    assert consistency.meets_objective is False
    assert (
        consistency.summary() == "CONSISTENCY: p50 50s, p95 1m40s over 10 runs; objective 1m NOT met at p95"
    )
    uptime = predicted.mode("UPTIME")
    assert uptime.total is None and uptime.meets_objective is None
    assert uptime.summary() == "UPTIME: no history"
    assert forecast(history, objective=100.0).mode("CONSISTENCY").meets_objective is True
    status = predicted.to_dict()
    assert status["objectiveSeconds"] == 60.0
    assert status["modes"][0]["totalSeconds"] == {"p50": 50.0, "p95": 100.0}
    assert status["modes"][1] == {"mode": "UPTIME", "runs": 0, "stages": {}, "summary": "UPTIME: no history"}
    assert "objectiveSeconds" not in forecast(history, objective=None).to_dict()  # no nulls in a status
    json.dumps(status)  # fit for a status patch


def test_group_forecast_reads_the_objective_of_the_group() -> None:
    history = [Record("UPTIME", "SUCCESS", T0, T0 + 30.0)]
    assert group_forecast(group(), history).objective is None
    predicted = group_forecast(group(objectives={"rto": "45s"}), history)
    assert predicted.objective == 45.0 and predicted.mode("UPTIME").meets_objective is True


def finished_run(mode: str = "CONSISTENCY", *, step_seconds: float = 1.0, fail_at: Step | None = None) -> Run:
    """A run of the sample group whose plan steps each took ``step_seconds``, one after the other."""
    run = new_run(
        run_id="run-1",
        failover=failover(mode=mode),
        group=group(),
        source_cluster="site-a",
        now=T0,
        drill=True,
    )
    steps: dict[str, StepRecord] = {}
    at = T0
    for planned in run.plan:
        if planned.skip_reason is not None:
            continue
        failed = planned.step is fail_at
        steps[planned.step.value] = StepRecord(
            attempts=3 if planned.step is Step.WAIT_READY else 1,
            errors=2 if planned.step is Step.WAIT_READY else int(failed),
            checks=4 if planned.step.value.startswith("wait") else 0,
            started_at=at,
            finished_at=at + step_seconds,
            outcome="failed" if failed else "done",
            message="boom" if failed else "ok",
        )
        at += step_seconds
        if failed:
            break
    status, state = (RunStatus.FAILED, Phase.FAILED) if fail_at else (RunStatus.SUCCESS, Phase.SUCCEEDED)
    return run.model_copy(
        update={"steps": steps, "started_at": T0, "finished_at": at, "status": status, "state": state}
    )


def test_timeline_stages_and_downtime_window_of_a_consistency_run() -> None:
    run = finished_run("CONSISTENCY")
    timeline = timeline_of(run)
    keys = [e.key for e in timeline]
    assert keys[0] == "validate" and keys[-1] == "complete"
    disable = next(e for e in timeline if e.key == "disable_network")
    enable = next(e for e in timeline if e.key == "enable_network")
    assert (disable.side, enable.side) == ("source", "target")
    # The source stops serving when disable_network starts; the target serves when enable_network ends.
    assert downtime_window(timeline) == (disable.start, enable.end)
    stages = stage_durations(timeline)
    assert stages[Stage.INITIALIZATION.value] == 3.0  # validate, acquire_lock, raise_fence
    assert sum(stages.values()) == pytest.approx(run.total_seconds())


def test_an_uptime_run_has_an_empty_downtime_window() -> None:
    window = downtime_window(timeline_of(finished_run("UPTIME")))
    assert window is not None and window[0] == window[1]


def test_the_timeline_survives_history_and_is_bounded() -> None:
    timeline = timeline_of(finished_run())
    assert decode(encode(timeline)) == timeline
    many = tuple(
        StepTiming(
            f"undo:{i}:scale_up_workloads",
            "scale_up_workloads",
            "COMPENSATION",
            "target",
            float(i),
            float(i) + 1,
            1,
            0,
            0,
            "done",
        )
        for i in range(200)
    )
    text = encode(many)
    assert len(decode(text)) == MAX_ENTRIES and len(text) < 8000
    assert decode("not json") == () and decode("") == ()


@pytest.mark.parametrize(
    ("outcome", "rto", "objective", "verdict"),
    [
        ("SUCCESS", 20.0, 30.0, Verdict.PASS),
        ("SUCCESS", 30.0, 30.0, Verdict.PASS),
        ("SUCCESS", 31.0, 30.0, Verdict.FAIL),
        ("SUCCESS", 31.0, None, Verdict.NO_OBJECTIVE),
        ("FAILED", 5.0, 30.0, Verdict.FAIL),
    ],
)
def test_the_verdict(outcome: str, rto: float, objective: float | None, verdict: Verdict) -> None:
    assert judge(outcome, rto, objective)[0] is verdict


def test_a_report_from_the_run_and_from_history_agree() -> None:
    run = finished_run(step_seconds=2.0)
    from_run = report_from_run(run, objective=30.0)
    record = Record(
        "CONSISTENCY", "SUCCESS", T0, run.finished_at or 0.0, timeline_of(run), run_id="run-1", drill=True
    )
    from_history = report_from_history(record, objective=30.0)
    assert from_run.rto_seconds == from_history.rto_seconds == run.total_seconds()
    assert from_run.downtime_seconds == from_history.downtime_seconds
    assert from_run.verdict[0] is Verdict.FAIL  # 20-odd steps of 2 s: beyond 30 s
    assert from_run.drill and from_history.drill
    assert [w.key for w in from_run.waits] == [w.key for w in from_history.waits]
    assert [f.key for f in from_run.faults] == ["wait_ready"]  # retried: 3 attempts, 2 errors
    assert [lane for lane, _ in from_run.lanes()] == ["site-a", "site-b", "DynamoDB (coordination)"]
    data = from_run.to_dict()
    assert data["verdict"] == "FAIL" and data["steps"][0]["message"] == "ok"
    assert "message" not in from_history.to_dict()["steps"][0]  # history keeps no step messages


def test_a_drill_fails_when_any_run_fails() -> None:
    good = report_from_run(finished_run(step_seconds=0.1), objective=30.0)
    bad = report_from_run(finished_run(fail_at=Step.WAIT_READY), objective=30.0)
    assert good.verdict[0] is Verdict.PASS
    assert bad.verdict[0] is Verdict.FAIL and bad.downtime is None
    assert drill_report("d", "shop/shop", [good], 30.0, T0).verdict is Verdict.PASS
    assert drill_report("d", "shop/shop", [good, bad], 30.0, T0).verdict is Verdict.FAIL
    assert drill_report("d", "shop/shop", [good], None, T0).verdict is Verdict.PASS  # objective per run
