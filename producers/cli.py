"""``failoverctl``: the operator's command line. It submits intent and reads state; it never runs steps.

Errors are one clear line on stderr (what, where, what to do) with exit code 1; usage errors exit 2.
Read commands take ``--output json``. This module assembles the commands; they live by theme in
:mod:`producers.cli_runs` (runs, history, locks, the table), :mod:`producers.cli_producers` (watcher,
health checker, submit) and :mod:`producers.cli_plan` (the dry runs), sharing
:mod:`producers.cli_common` (settings read once per command, errors, options).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fsm.graph import dot, mermaid
from fsm.plan import PlanKind
from producers import (
    cli_control,
    cli_drill,
    cli_group,
    cli_group_adopt,
    cli_group_show,
    cli_plan,
    cli_producers,
    cli_runs,
)
from producers.cli_common import DEBUG_VARIABLE, FailoverctlGroup, KindChoice, fail, out, settings_of
from workers.api import configure_logging

app = typer.Typer(
    cls=FailoverctlGroup,
    help="Move applications between Kubernetes clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="Local stand-ins for the outside world.", no_args_is_help=True)


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    png = "png"


def graph(
    mode: Annotated[KindChoice, typer.Option("--mode", "-m", help="Which kind of run's machine to draw.")],
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="mermaid, dot or png")
    ] = GraphFormat.mermaid,
    output_file: Annotated[
        Path | None, typer.Option("--output-file", "-o", help="Write here (png needs it)")
    ] = None,
) -> None:
    """Print (or write) the state machine of a failover mode: Mermaid by default, DOT, or a PNG."""
    kind = PlanKind(mode.value.upper())
    if format is GraphFormat.png:
        if output_file is None:
            raise fail("--format png writes a file: give --output-file FILE.png", 2)
        if shutil.which("dot") is None:
            raise fail(
                "a PNG needs Graphviz's dot: install it (apt-get install graphviz) or use --format mermaid"
            )
        drawn = subprocess.run(
            ["dot", "-Tpng", "-o", str(output_file)],
            input=dot(kind),
            text=True,
            capture_output=True,
            check=False,
        )
        if drawn.returncode != 0:
            problem = (drawn.stderr.strip().splitlines() or [f"exit code {drawn.returncode}"])[-1]
            raise fail(f"--output-file {output_file}: Graphviz's dot could not write it: {problem}")
        out().print(f"wrote {output_file}")
        return
    text = mermaid(kind) if format is GraphFormat.mermaid else dot(kind)
    if output_file is not None:
        try:
            output_file.write_text(text)
        except OSError as error:
            raise fail(f"--output-file {output_file}: cannot write it: {error.strerror or error}") from error
        out().print(f"wrote {output_file}")
    else:
        typer.echo(text)


def worker(
    ctx: typer.Context,
    queues: Annotated[
        str | None, typer.Option("--queues", "-Q", help="Queues to consume (default: settings).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
) -> None:
    """Start a Celery worker for the failover steps (extra arguments go to `celery worker`)."""
    settings = settings_of(ctx)
    # `celery -A workers.tasks worker` without the rest of Celery's CLI (12.6 MiB less per process).
    command = [
        sys.executable,
        "-m",
        "workers.run_worker",
        "--loglevel",
        settings.log_level,
        "-Q",
        queues or settings.queue,
        "--concurrency",
        str(concurrency),
        *ctx.args,
    ]
    os.execv(sys.executable, command)


def demo() -> None:
    """Run failovers end to end on local stand-ins: two sandbox clusters, Redis, DynamoDB, a worker.

    Starts what it needs (Redis only if none answers at REDIS_URL), runs a CONSISTENCY failover and
    an UPTIME failback with a live view, prints the measured times and the final state of both
    clusters, and stops everything it started.
    """
    # The sandbox is never imported by the product: the demo runs as a program of its own, in this
    # process (exec), so that Ctrl-C and SIGTERM reach it and it stops everything it started.
    os.execv(sys.executable, [sys.executable, "-m", "sandbox.demo"])


def sandbox_up(
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Also write the exports (KUBECONFIG, Redis, DynamoDB, run key, operatorID, clusters) "
            "to this file, for `source FILE`; removed on stop",
        ),
    ] = None,
) -> None:
    """Start two sandbox clusters, Redis, DynamoDB and a worker, print how to reach them, wait for Ctrl-C."""
    extra = ["--env-file", str(env_file)] if env_file is not None else []
    os.execv(sys.executable, [sys.executable, "-m", "sandbox.demo", "--up", *extra])


# In the order `failoverctl --help` lists them.
app.command()(graph)
app.command()(cli_runs.status)
app.command()(cli_runs.watch)
app.command()(cli_runs.history)
app.add_typer(cli_runs.dynamodb_app, name="dynamodb")
app.add_typer(cli_runs.lock_app, name="lock")
app.add_typer(cli_runs.run_app, name="run")
cli_group.group_app.command("adopt")(cli_group_adopt.adopt_command)
cli_group.group_app.command("show")(cli_group_show.show_command)
cli_control.register(cli_runs.run_app)
app.add_typer(cli_group.group_app, name="group")
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(worker)
app.command()(demo)
app.add_typer(sandbox_app, name="sandbox")
sandbox_app.command("up")(sandbox_up)
app.command("watcher")(cli_producers.watcher_command)
app.command("health-checker")(cli_producers.health_checker_command)
app.command("submit")(cli_producers.submit_command)
app.command("plan")(cli_plan.plan_command)
app.command("validate")(cli_plan.validate_command)
app.command("drill")(cli_drill.drill_command)
app.command("report")(cli_drill.report_command)


def main() -> None:
    # One-shot commands say what went wrong in their one error line: the adapters' log lines (a
    # DynamoDB request giving up, say) would repeat it in another format. Long-running commands
    # (watcher, health checker) configure the real logging when they start.
    if not os.environ.get(DEBUG_VARIABLE):
        configure_logging(level="CRITICAL", provisional=True)
    app()


if __name__ == "__main__":
    main()
