"""``failoverctl`` commands that read (and, for a stuck lock, repair) the state of runs and groups:
``status``, ``watch``, ``history``, ``lock show|release``, ``run rebuild`` and ``dynamodb init``."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Annotated

import typer
from rich.table import Table

from fsm.run import Run
from producers.cli_common import (
    OperatorOption,
    Output,
    OutputOption,
    emit_json,
    fail,
    group_key,
    orchestrator,
    out,
    require_known,
    settings_of,
    split_name,
    when,
)
from producers.views import live_view, run_view, shown_status, summary
from workers.api import Orchestrator

lock_app = typer.Typer(help="Inspect or release a group's lock.", no_args_is_help=True)
run_app = typer.Typer(help="Control or repair a run.", no_args_is_help=True)
dynamodb_app = typer.Typer(
    help="The DynamoDB table that holds locks, owners and history.", no_args_is_help=True
)

GroupArgument = Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")]


def status(
    ctx: typer.Context,
    failover: Annotated[
        str | None, typer.Argument(help="NAMESPACE/NAME of a Failover (default: recent runs)")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many recent runs")] = 20,
    output: OutputOption = Output.table,
) -> None:
    """The runs of one Failover, or the most recent runs, with their state and times."""
    if failover is not None:
        split_name(failover, what="failover")
    with orchestrator(settings_of(ctx)) as handle:
        runs = handle.runs(failover=failover, limit=limit)
        queued = _queued(handle) if output is Output.table and failover is None else ""
    if failover is not None and not runs:
        namespace, name = split_name(failover, what="failover")
        raise fail(
            f"Failover {failover}: no run of it in Redis: the watcher has not submitted it (see "
            f"`kubectl get failover -n {namespace} {name}` and its conditions), or its runs expired "
            "(FAILOVER_RUN_TTL); its group's record is in `failoverctl history NS/GROUP`"
        )
    if output is Output.json:
        emit_json([run.model_dump(mode="json") for run in runs])
        return
    table = Table(title="runs", caption=queued or None)
    columns = ("run", "failover", "group", "mode", "from → to", "status", "state", "started", "took")
    for column in (*columns, "message"):
        table.add_column(column)
    for run in runs:
        took = run.total_seconds()
        table.add_row(
            run.run_id,
            run.failover,
            str(run.group),
            run.kind.value,
            f"{run.source_cluster} → {run.target_cluster}",
            shown_status(run),
            run.state_name,
            when(run.started_at),
            f"{took:.1f}s" if took is not None else "",
            run.message,
        )
    out().print(table)


def _queued(handle: Orchestrator) -> str:
    """The site's runs waiting for admission, per lane (nothing when none wait, or admission is off):
    the same two cheap reads as the gauge ``failover_admission_queued_runs``."""
    admission = handle.admission
    lanes = admission.queued() if admission is not None else {}
    if not sum(lanes.values()):
        return ""
    each = ", ".join(f"{lane} {n}" for lane, n in lanes.items())
    return f"{sum(lanes.values())} runs queued for admission ({each})"


def _runs_of(handle: Orchestrator, target: str) -> list[Run]:
    found = handle.runs(failover=target) if "/" in target else [r for r in [handle.run(target)] if r]
    if not found:
        raise fail(f"no run {target!r} in Redis (give a run id, or NAMESPACE/NAME of a Failover)")
    return found


def _first_runs(handle: Orchestrator, target: str, wait: float) -> list[Run]:
    """The target's runs; for a Failover (NAMESPACE/NAME) just created, wait up to ``wait`` seconds
    for the watcher to submit it (it does within a pass or two) before saying there is none."""
    deadline = time.monotonic() + wait
    while "/" in target and time.monotonic() < deadline:
        found = handle.runs(failover=target)
        if found:
            return found
        time.sleep(0.2)
    try:
        return _runs_of(handle, target)
    except typer.Exit:
        if "/" in target and wait > 0:
            raise fail(
                f"no run of Failover {target!r} after {wait:g}s: is the watcher running, with the "
                "operatorID of its group (FAILOVER_OPERATOR_ID)? `kubectl describe failover` shows why"
            ) from None
        raise


def watch(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A run id, or NAMESPACE/NAME of a Failover")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes")] = 0.5,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds (0: never)")] = 0.0,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the watcher to submit a Failover given by name")
    ] = 15.0,
) -> None:
    """Follow a run (or every run of a Failover) live: stages, steps, timings and the current wait."""
    from rich.console import Group

    console = out()
    with orchestrator(settings_of(ctx)) as handle:
        current = _first_runs(handle, target, wait)
        deadline = time.monotonic() + timeout if timeout > 0 else None
        with live_view(console, Group(*[run_view(r) for r in current])) as live:
            while not all(r.terminal for r in current):
                if deadline is not None and time.monotonic() > deadline:
                    raise fail(f"still running after {timeout:g}s", 1)
                time.sleep(interval)
                current = _runs_of(handle, target)
                live.update(Group(*[run_view(r) for r in current]))
    for run in current:
        console.print(summary(run))
    if any(r.status.value in ("FAILED", "CANCELLED") for r in current):
        raise typer.Exit(1)


def history(
    ctx: typer.Context,
    group: GroupArgument,
    operator_id: OperatorOption = None,
    limit: Annotated[int, typer.Option(help="How many records, newest first")] = 20,
    output: OutputOption = Output.table,
) -> None:
    """The group's finished failovers, newest first, from DynamoDB."""
    settings = settings_of(ctx)
    key = group_key(group, operator_id, settings)
    with orchestrator(settings) as handle:
        records = handle.history(key, limit=limit)
        if not records:
            require_known(handle, key)
    if output is Output.json:
        emit_json([dataclasses.asdict(record) for record in records])
        return
    table = Table(title=f"history of {key}")
    columns = ("started", "outcome", "mode", "from → to", "took", "downtime", "failed step", "run")
    for column in (*columns, "reason"):
        table.add_column(column)
    for r in records:
        table.add_row(
            when(r.started_at),
            r.outcome,
            f"{r.mode} (drill)" if r.drill else r.mode,
            f"{r.source_cluster} → {r.target_cluster}",
            f"{r.finished_at - r.started_at:.1f}s",
            f"{r.downtime_seconds:.1f}s" if r.downtime_seconds is not None else "",
            r.failed_step or "",
            r.run_id,
            r.reason or r.message,
        )
    out().print(table)
    for r in records:
        for control in r.controls:
            out().print(f"run {r.run_id} control: {control}")


@lock_app.command("show")
def lock_show(
    ctx: typer.Context,
    group: GroupArgument,
    operator_id: OperatorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Who holds the group's lock, with which fencing token, until when."""
    settings = settings_of(ctx)
    key = group_key(group, operator_id, settings)
    with orchestrator(settings) as handle:
        info = handle.lock(key)
        if info is None:
            require_known(handle, key)
    if output is Output.json:
        emit_json(info.__dict__ if info else None)
        return
    if info is None:
        out().print(f"group {key} is not locked")
        return
    out().print(
        f"group {key} is locked by {info.holder} for run {info.run_id} (token {info.token}) "
        f"since {when(info.acquired_at)} until {when(info.expires_at)} UTC"
    )


@lock_app.command("release")
def lock_release(
    ctx: typer.Context,
    group: GroupArgument,
    reason: Annotated[str, typer.Option(help="Why (recorded in history)")],
    operator_id: OperatorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Release a group's lock by hand. The run holding it stops at its next step (its lease is lost)."""
    settings = settings_of(ctx)
    key = group_key(group, operator_id, settings)
    with orchestrator(settings) as handle:
        info = handle.lock(key)
        if info is None:
            require_known(handle, key)
            out().print(f"group {key} is not locked")
            return
        if not yes:
            typer.confirm(
                f"Release the lock of {key} held by {info.holder} for run {info.run_id}? "
                "That run will stop at its next step",
                abort=True,
            )
        who = os.environ.get("USER") or "failoverctl"
        handle.release_lock(key, by=who, reason=reason)
    out().print(f"released the lock of {key} (run {info.run_id}, token {info.token}); recorded in history")


@dynamodb_app.command("init")
def dynamodb_init(ctx: typer.Context) -> None:
    """Create the DynamoDB table if it does not exist, wait until it is active, enable its TTL."""
    settings = settings_of(ctx)
    with orchestrator(settings) as handle:
        handle.init_table()
    out().print(f"table {settings.dynamodb_table!r} is ready")


@run_app.command("rebuild")
def run_rebuild(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A run id, or NAMESPACE/NAME of a Failover")],
    group: Annotated[
        str | None,
        typer.Option(help="NAMESPACE/NAME of the run's FailoverGroup (default: from the held locks)"),
    ] = None,
    operator_id: OperatorOption = None,
) -> None:
    """Recreate a run Redis lost from its DynamoDB journal and send its message again.

    Workers do this by themselves within seconds for the locks their site holds (README
    "Reliability")."""
    settings = settings_of(ctx)
    key = group_key(group, operator_id, settings) if group else None
    with orchestrator(settings) as handle:
        results = handle.rebuild(target, group=key)
    for result in results:
        run = result.run
        if result.created:
            out().print(
                f"rebuilt run {run.run_id} ({run.failover}, group {run.group}) from journal entry "
                f"#{result.sequence}: {run.state_name}; its message was sent again"
            )
        else:
            out().print(f"run {run.run_id} is in Redis ({run.state_name}): nothing to rebuild")
