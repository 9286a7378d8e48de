"""``failoverctl drill`` (a real failover, and with ``--back`` the failback, marked as a drill) and
``failoverctl report`` (the same report page for any finished run).

A drill is refused, before anything is submitted, while the group is suspended, diverged, locked by a
run, or not healthy on its active cluster (PRIMARY) and on the drill's target (STANDBY), judged from
the real objects by the health checker's rules (:func:`producers.health.read_and_judge`). It submits
its runs directly through the workers (like ``group resolve``: no Failover object is created; the
run's ``failover`` is ``NAMESPACE/drill-GROUP-STAMP``), waits for each, and writes the report as JSON
and as one HTML page. Exit codes: 0 when every run succeeded within the objective (or the group sets
none), 1 when a run failed or missed ``spec.objectives.rto`` (the report is written all the same),
2 for usage errors.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fsm.forecast import objective_of
from fsm.health import ClusterRole, Health
from fsm.models import Failover, FailoverGroup, FailoverMode, GroupKey
from fsm.report import DrillReport, RunReport, drill_report, report_from_history, report_from_run
from fsm.run import Run
from producers.cli_common import (
    ClusterOption,
    KubeconfigOption,
    ModeChoice,
    OperatorOption,
    fail,
    group_key,
    orchestrator,
    out,
    read_group,
    require_run_key,
    settings_of,
    wait_run,
)
from producers.health import read_and_judge
from producers.kube import ClusterClient, kubeconfig_contexts
from producers.report_page import render
from producers.views import summary
from workers.api import Orchestrator, RequestError
from workers.errors import OrchestratorError

# How far back in a group's history ``failoverctl report`` looks for a run Redis no longer holds.
HISTORY_DEPTH = 200
# How long the failback of a drill waits for the group to be healthy again after the first run.
FAILBACK_SETTLE_SECONDS = 30.0


def _health_problem(
    found: FailoverGroup, cluster: str, role: ClusterRole, kubeconfig: Path | None
) -> str | None:
    """Why ``found`` is not healthy on ``cluster`` in ``role`` (None when it is OK there)."""
    try:
        client = ClusterClient.from_kubeconfig(kubeconfig, cluster)
    except OrchestratorError as error:
        return f"cluster {cluster!r} cannot be reached: {error.describe()}"
    try:
        health, _ = read_and_judge(client, found, role)
    finally:
        client.close()
    if health.health is Health.OK:
        return None
    bad = [f"{r.ref}: {r.health.value} ({r.status})" for r in health.resources if r.health is not Health.OK]
    detail = "; ".join(bad[:3]) or health.detail
    return f"group is {health.health.value} on {cluster} ({role.value.lower()}): {detail}"


def _refusal(
    handle: Orchestrator, found: FailoverGroup, key: GroupKey, to: str, kubeconfig: Path | None
) -> str:
    """Why a drill of ``key`` to ``to`` may not start now ("" when it may)."""
    if found.spec.suspended:
        reason = f" ({found.spec.suspension_reason})" if found.spec.suspension_reason else ""
        return f"group {key} is suspended{reason}: no drill until spec.suspended is false"
    divergence = handle.divergence(key)
    if divergence is not None:
        return (
            f"group {key} is diverged ({divergence.reason}): settle it with `failoverctl group resolve` first"
        )
    lock = handle.lock(key)
    if lock is not None and lock.expires_at > time.time():
        return f"group {key} is locked by run {lock.run_id}: wait for it to finish"
    owner = handle.coordination.active_cluster(key)
    if owner is None:
        return f"group {key} has no active cluster recorded"
    if owner == to:
        return f"--to {to!r} is already the active cluster of group {key}"
    for cluster, role in ((owner, ClusterRole.PRIMARY), (to, ClusterRole.STANDBY)):
        problem = _health_problem(found, cluster, role, kubeconfig)
        if problem:
            return f"{problem}: a drill needs a healthy group"
    return ""


def _drill_failover(found: FailoverGroup, to: str, mode: FailoverMode, name: str) -> Failover:
    namespace = found.metadata.namespace
    return Failover.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "targetCluster": to,
                "failoverMode": mode.value,
                "reason": f"drill {name}",
                "failoverGroups": [{"name": found.metadata.name, "namespace": namespace}],
            },
        }
    )


def _run_leg(
    handle: Orchestrator, found: FailoverGroup, to: str, *, mode: FailoverMode, name: str, timeout: float
) -> Run:
    try:
        submission = handle.submit(_drill_failover(found, to, mode, name), found, drill=True)
    except RequestError as error:
        raise fail(f"drill refused: {error}") from error
    run_id = submission.run.run_id
    out().print(f"run {run_id}: {mode.value} drill of {found.key} to {to}")
    run = wait_run(handle, run_id, timeout, records="`failoverctl history` and `failoverctl report`")
    out().print(summary(run))
    return run


def write_report(report: DrillReport, directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / f"{stem}.json", directory / f"{stem}.html"
    json_path.write_text(json.dumps(report.to_dict(), indent=2))
    html_path.write_text(render(report))
    return json_path, html_path


def drill_command(
    ctx: typer.Context,
    *,
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    to: Annotated[str, typer.Option("--to", help="The cluster to fail over to")],
    mode: Annotated[
        ModeChoice, typer.Option("--mode", help="failoverMode of the drill")
    ] = ModeChoice.consistency,
    back: Annotated[bool, typer.Option("--back", help="Then fail back to the original owner")] = False,
    report_dir: Annotated[Path, typer.Option("--report-dir", help="Where to write the report")] = Path("."),
    context: Annotated[
        str | None, typer.Option("--context", help="Cluster to read the FailoverGroup from")
    ] = None,
    cluster: ClusterOption = None,
    kubeconfig: KubeconfigOption = None,
    operator_id: OperatorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each run")] = 900.0,
) -> None:
    """Fail GROUP over to --to for real as a drill (and back with --back), then write its report.

    The report (JSON and HTML) has the timeline, downtime, RTO and verdict. Refused while the group is
    suspended, diverged, locked or unhealthy; exit 1 when a run failed or the RTO missed
    spec.objectives.rto (the report is written anyway). The workers must be running."""
    settings = settings_of(ctx)
    clusters = list(cluster or settings.clusters or kubeconfig_contexts(kubeconfig))
    if to not in clusters:
        raise fail(f"--to {to!r} is not one of the clusters ({', '.join(clusters)})", 2)
    found = read_group(group, kubeconfig, context, to)
    key = group_key(group, operator_id or found.spec.operator_id, settings)
    failover_mode = FailoverMode(mode.value.upper())
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    name = f"drill-{found.metadata.name[:200]}-{stamp}"
    require_run_key(settings)
    with orchestrator(settings) as handle:
        refusal = _refusal(handle, found, key, to, kubeconfig)
        if refusal:
            raise fail(f"drill refused: {refusal}")
        owner = handle.coordination.active_cluster(key)
        assert owner is not None  # _refusal refuses a group without an owner
        if not yes:
            back_text = f" and back to {owner}" if back else ""
            typer.confirm(
                f"Fail {key} over from {owner} to {to}{back_text} for real, as a drill?", abort=True
            )
        runs = [_run_leg(handle, found, to, mode=failover_mode, name=name, timeout=timeout)]
        refused_back = ""
        if back and runs[0].status.value == "SUCCESS":  # the group read again: suspended meanwhile?
            again = read_group(group, kubeconfig, context, to)
            leg = Leg(failover_mode, name, timeout, kubeconfig)
            refused_back = _failback(handle, again, key, owner, runs=runs, leg=leg)
    objective = objective_of(found)
    report = drill_report(
        f"Drill of {key}: {owner} → {to}" + (f" → {owner}" if back else ""),
        str(key),
        [report_from_run(run, objective) for run in runs],
        objective,
        time.time(),
    )
    _conclude(report, report_dir, name, no_failback=back and len(runs) == 1, refused_back=refused_back)


@dataclass(frozen=True)
class Leg:
    """How the drill's runs are made: their mode, the drill's name, the wait for each, the kubeconfig."""

    mode: FailoverMode
    name: str
    timeout: float
    kubeconfig: Path | None


def _failback(
    handle: Orchestrator,
    found: FailoverGroup,
    key: GroupKey,
    owner: str,
    *,
    runs: list[Run],
    leg: Leg,
) -> str:
    """The failback leg, run (appended to ``runs``) unless the drill's checks refuse it: then why."""
    refusal = _refusal_settled(handle, found, key, owner, leg.kubeconfig)
    if not refusal:
        runs.append(
            _run_leg(handle, found, owner, mode=leg.mode, name=f"{leg.name}-back", timeout=leg.timeout)
        )
    return refusal


def _refusal_settled(
    handle: Orchestrator, found: FailoverGroup, key: GroupKey, to: str, kubeconfig: Path | None
) -> str:
    """:func:`_refusal` of the failback, given a moment (the clusters' controllers settle after the first
    run): "" as soon as the group may go back, else the last reason."""
    deadline = time.monotonic() + FAILBACK_SETTLE_SECONDS
    while True:
        refusal = _refusal(handle, found, key, to, kubeconfig)
        if not refusal or time.monotonic() > deadline:
            return refusal
        time.sleep(1.0)


def _conclude(
    report: DrillReport, report_dir: Path, name: str, *, no_failback: bool, refused_back: str = ""
) -> None:
    """Write the report, say each run's verdict, exit 1 unless the drill passed (a failback refused by
    the drill's own checks fails the drill: the group stays on the drill's target)."""
    json_path, html_path = write_report(report, report_dir, name)
    out().print(f"report: {html_path} and {json_path}")
    for run_report in report.runs:
        verdict, why = run_report.verdict
        out().print(f"run {run_report.run_id}: {verdict.value}: {why}")
    if refused_back:
        out().print(f"no failback: refused: {refused_back}")
    elif no_failback:
        out().print("no failback: the failover did not succeed")
    out().print(f"drill verdict: {'FAIL' if refused_back else report.verdict.value}")
    if refused_back or not report.passed:
        raise typer.Exit(1)


class ReportFormat(StrEnum):
    html = "html"
    json = "json"


def _from_history(handle: Orchestrator, run_id: str, key: GroupKey, objective: float | None) -> RunReport:
    for record in handle.history(key, limit=HISTORY_DEPTH):
        if record.run_id == run_id and record.mode:
            return report_from_history(record, objective)
    raise fail(
        f"run {run_id} is neither in Redis nor in the last {HISTORY_DEPTH} history records of group {key}"
    )


def report_command(
    ctx: typer.Context,
    *,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run id")],
    output_file: Annotated[
        Path | None, typer.Option("--output-file", "-o", help="Write here (default: stdout)")
    ] = None,
    format: Annotated[ReportFormat, typer.Option("--format", "-f", help="html or json")] = ReportFormat.html,
    group: Annotated[
        str | None,
        typer.Option("--group", "-g", help="NAMESPACE/NAME: the run's group (its objective; its history)"),
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="Cluster to read the FailoverGroup from")
    ] = None,
    kubeconfig: KubeconfigOption = None,
    operator_id: OperatorOption = None,
) -> None:
    """Render the report of a finished run (the page a drill writes), as HTML or JSON.

    From the run while Redis holds it, else from the group's history in DynamoDB (--group; step
    messages are not kept there)."""
    settings = settings_of(ctx)
    with orchestrator(settings) as handle:
        run = handle.run(run_id)
        if run is not None and not run.terminal:
            raise fail(f"run {run_id} is still {run.state_name}: a report is for a finished run")
        named = group or (str(run.group) if run is not None else None)
        if named is None:
            raise fail(
                f"run {run_id} is not in Redis (an unknown run, or one Redis let go): give --group "
                "NAMESPACE/NAME to read its group's history",
                2,
            )
        found = read_group(named, kubeconfig, context, None)
        objective = objective_of(found)
        if run is not None:
            run_report = report_from_run(run, objective)
        else:
            key = group_key(named, operator_id or found.spec.operator_id, settings)
            run_report = _from_history(handle, run_id, key, objective)
    report = drill_report(
        f"{'Drill' if run_report.drill else 'Run'} {run_id} of {run_report.group}",
        run_report.group,
        [run_report],
        objective,
        time.time(),
    )
    text = render(report) if format is ReportFormat.html else json.dumps(report.to_dict(), indent=2)
    if output_file is None:
        typer.echo(text)
    else:
        output_file.write_text(text)
        out().print(f"wrote {output_file}")
