"""``failoverctl``: the operator's command line. It submits intent and reads state; it never runs steps.

Commands so far: ``graph`` (a mode's state machine as Mermaid), ``worker`` (start a Celery worker
with the project's settings) and ``demo`` (an end-to-end run of the engine on local stand-ins).
Errors are one clear line on stderr and a conventional exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from enum import StrEnum
from typing import Annotated

import typer

from fsm.graph import mermaid
from fsm.models import FailoverMode

app = typer.Typer(
    help="Move applications between Kubernetes clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class ModeChoice(StrEnum):
    consistency = "consistency"
    uptime = "uptime"


@app.command()
def graph(
    mode: Annotated[ModeChoice, typer.Option("--mode", "-m", help="Which mode's machine to draw.")],
) -> None:
    """Print the state machine of a failover mode as a Mermaid state diagram."""
    typer.echo(mermaid(FailoverMode(mode.value.upper())))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[
        str | None, typer.Option("--queues", "-Q", help="Queues to consume (default: settings).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
) -> None:
    """Start a Celery worker for the failover steps (extra arguments go to ``celery worker``)."""
    from workers.settings import get_settings

    settings = get_settings()
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
