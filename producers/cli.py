"""``failoverctl``: the operator's command line. It submits intent and reads state; it never runs steps.

Errors are one clear line on stderr (what, where, what to do) with exit code 1; usage errors exit 2.
Read commands take ``--output json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fsm.graph import mermaid
from fsm.models import FailoverMode, GroupKey
from workers.api import Orchestrator
from workers.errors import OrchestratorError
from workers.settings import Settings

app = typer.Typer(
    help="Move applications between Kubernetes clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dynamodb_app = typer.Typer(
    help="The DynamoDB table that holds locks, owners and history.", no_args_is_help=True
)
lock_app = typer.Typer(help="Inspect or release a group's lock.", no_args_is_help=True)
app.add_typer(dynamodb_app, name="dynamodb")
app.add_typer(lock_app, name="lock")


def out() -> Console:
    """A console per command, so that the terminal's width (or COLUMNS) is read when it prints."""
    return Console()


class ModeChoice(StrEnum):
    consistency = "consistency"
    uptime = "uptime"


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table or json")]
OperatorOption = Annotated[
    str | None, typer.Option("--operator-id", help="operatorID of the group (default: settings)")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def orchestrator() -> Iterator[Orchestrator]:
    try:
        with Orchestrator(Settings()) as handle:
            yield handle
    except OrchestratorError as error:
        raise fail(error.describe()) from error


def group_key(group: str, operator_id: str | None, settings: Settings | None = None) -> GroupKey:
    namespace, _, name = group.partition("/")
    if not namespace or not name or "/" in name:
        raise fail(f"group {group!r}: expected NAMESPACE/NAME", 2)
    return GroupKey(
        operator_id=operator_id or (settings or Settings()).operator_id, namespace=namespace, name=name
    )


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def graph(
    mode: Annotated[ModeChoice, typer.Option("--mode", "-m", help="Which mode's machine to draw.")],
) -> None:
    """Print the state machine of a failover mode as a Mermaid state diagram."""
    typer.echo(mermaid(FailoverMode(mode.value.upper())))


@app.command()
def status(
    failover: Annotated[
        str | None, typer.Argument(help="NAMESPACE/NAME of a Failover (default: recent runs)")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many recent runs")] = 20,
    output: OutputOption = Output.table,
) -> None:
    """The runs of one Failover, or the most recent runs, with their state and times."""
    with orchestrator() as handle:
        runs = handle.runs(failover=failover, limit=limit)
    if output is Output.json:
        _emit_json([run.model_dump(mode="json") for run in runs])
        return
    table = Table(title="runs")
    for column in (
        "run",
        "failover",
        "group",
        "mode",
        "from → to",
        "status",
        "state",
        "started",
        "took",
        "message",
    ):
        table.add_column(column)
    for run in runs:
        took = run.total_seconds()
        table.add_row(
            run.run_id,
            run.failover,
            str(run.group),
            run.mode.value,
            f"{run.source_cluster} → {run.target_cluster}",
            run.status.value,
            run.state.name,
            _when(run.started_at),
            f"{took:.1f}s" if took is not None else "",
            run.message,
        )
    out().print(table)


@app.command()
def history(
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    operator_id: OperatorOption = None,
    limit: Annotated[int, typer.Option(help="How many records, newest first")] = 20,
    output: OutputOption = Output.table,
) -> None:
    """The group's finished failovers, newest first, from DynamoDB."""
    key = group_key(group, operator_id)
    with orchestrator() as handle:
        records = handle.history(key, limit=limit)
    if output is Output.json:
        _emit_json([record.__dict__ for record in records])
        return
    table = Table(title=f"history of {key}")
    for column in (
        "started",
        "outcome",
        "mode",
        "from → to",
        "took",
        "downtime",
        "failed step",
        "run",
        "reason",
    ):
        table.add_column(column)
    for r in records:
        table.add_row(
            _when(r.started_at),
            r.outcome,
            r.mode,
            f"{r.source_cluster} → {r.target_cluster}",
            f"{r.finished_at - r.started_at:.1f}s",
            f"{r.downtime_seconds:.1f}s" if r.downtime_seconds is not None else "",
            r.failed_step or "",
            r.run_id,
            r.reason or r.message,
        )
    out().print(table)


@lock_app.command("show")
def lock_show(
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    operator_id: OperatorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Who holds the group's lock, with which fencing token, until when."""
    key = group_key(group, operator_id)
    with orchestrator() as handle:
        info = handle.lock(key)
    if output is Output.json:
        _emit_json(info.__dict__ if info else None)
        return
    if info is None:
        out().print(f"group {key} is not locked")
        return
    out().print(
        f"group {key} is locked by {info.holder} for run {info.run_id} (token {info.token}) "
        f"since {_when(info.acquired_at)} until {_when(info.expires_at)} UTC"
    )


@lock_app.command("release")
def lock_release(
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    reason: Annotated[str, typer.Option(help="Why (recorded in history)")],
    operator_id: OperatorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Release a group's lock by hand. The run holding it stops at its next step (its lease is lost)."""
    key = group_key(group, operator_id)
    with orchestrator() as handle:
        info = handle.lock(key)
        if info is None:
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
def dynamodb_init() -> None:
    """Create the DynamoDB table if it does not exist, wait until it is active, enable its TTL."""
    settings = Settings()
    with orchestrator() as handle:
        handle.init_table()
    out().print(f"table {settings.dynamodb_table!r} is ready")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[
        str | None, typer.Option("--queues", "-Q", help="Queues to consume (default: settings).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
) -> None:
    """Start a Celery worker for the failover steps (extra arguments go to ``celery worker``)."""
    settings = Settings()
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.tasks",
        "worker",
        "--loglevel",
        settings.log_level,
        "-Q",
        queues or settings.queue,
        "--concurrency",
        str(concurrency),
        *ctx.args,
    ]
    os.execv(sys.executable, command)


@app.command()
def demo() -> None:
    """Run failovers end to end on local stand-ins: Redis, a real Celery worker, fake clusters.

    Starts what it needs (Redis only if none answers at REDIS_URL), runs a CONSISTENCY failover and
    an UPTIME failback, prints the measured times and stops everything it started.
    """
    # The sandbox is never imported by the product: the demo runs as a program of its own.
    raise typer.Exit(subprocess.call([sys.executable, "-m", "sandbox.engine_demo"]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
