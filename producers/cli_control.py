"""``failoverctl run pause|resume|cancel|retry-step|skip-step``: control a run in flight, audited.

Each command asks (:meth:`workers.api.Orchestrator.control`): a request the run cannot take now is
refused at once, with the reason, and nothing changes (exit 2). An accepted one is stored in the run
and applied by the engine at the next step boundary; the command waits ``--wait`` seconds for that and
says what happened (exit 1 if the engine refused it then, e.g. a cancel that the point of no return
overtook). Who: the OS user (``getpass``); why: ``--reason``, required. See README "Operating".
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from fsm.audit import ControlAction, ControlOutcome
from fsm.plan import Step
from fsm.run import Run
from producers.cli_common import fail, orchestrator, out, settings_of
from workers.api import Asked, Orchestrator

TargetArgument = Annotated[str, typer.Argument(help="A run id, or NAMESPACE/NAME of a Failover (its runs)")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded in the run, status and history)")]
WaitOption = Annotated[float, typer.Option("--wait", help="Seconds to wait for the engine to apply it")]


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "failoverctl"


def _targets(handle: Orchestrator, target: str) -> list[Run]:
    found = handle.runs(failover=target) if "/" in target else [r for r in [handle.run(target)] if r]
    if not found:
        raise fail(f"no run {target!r} in Redis (give a run id, or NAMESPACE/NAME of a Failover)", 2)
    running = [r for r in found if not r.terminal]
    if "/" in target and not running:
        ended = ", ".join(f"{r.run_id} {r.status.value}" for r in found)
        raise fail(f"Failover {target} has no run in flight ({ended}): nothing to control", 2)
    return running or found


def _control(ctx: typer.Context, target: str, asked: Asked, wait: float) -> None:
    """Ask for ``asked`` on every run of ``target``; report each; exit 2 if one was refused at once,
    1 if the engine refused one when applying it."""
    code = 0
    with orchestrator(settings_of(ctx)) as handle:
        for run in _targets(handle, target):
            result = handle.control(run.run_id, asked)
            if result.record is None:
                typer.echo(
                    f"error: run {run.run_id}: {asked.action.value} refused: {result.refused}", err=True
                )
                code = max(code, 2)
                continue
            record = result.record
            out().print(
                f"run {run.run_id}: {asked.action.value} requested by {asked.who} (control #{record.id})"
            )
            decided = handle.control_decided(run.run_id, record.id, timeout=wait) if wait > 0 else None
            if decided is None or decided.pending:
                out().print(
                    f"run {run.run_id}: not applied yet: applied when step {run.step_key} reports back "
                    f"(follow with `failoverctl watch {run.run_id}`)"
                )
            elif decided.outcome is ControlOutcome.REFUSED:
                typer.echo(
                    f"error: run {run.run_id}: {asked.action.value} refused: {decided.message}", err=True
                )
                code = max(code, 1)
            else:
                out().print(f"run {run.run_id}: {asked.action.value} applied: {decided.message}")
    if code:
        raise typer.Exit(code)


def pause(ctx: typer.Context, target: TargetArgument, reason: ReasonOption, wait: WaitOption = 10.0) -> None:
    """Pause a run: it finishes the step it is in and waits, still holding its lock.

    The sweep renews its lease; its deadlines do not run while paused."""
    _control(ctx, target, Asked(ControlAction.PAUSE, _who(), reason), wait)


def resume(ctx: typer.Context, target: TargetArgument, reason: ReasonOption, wait: WaitOption = 10.0) -> None:
    """Resume a paused run from where it paused (its deadlines extended by the time paused)."""
    _control(ctx, target, Asked(ControlAction.RESUME, _who(), reason), wait)


def cancel(ctx: typer.Context, target: TargetArgument, reason: ReasonOption, wait: WaitOption = 10.0) -> None:
    """Cancel a run before its point of no return: what it did is undone and it ends CANCELLED.

    Past that point it is refused (the run continues) with the `group resolve` command to use."""
    _control(ctx, target, Asked(ControlAction.CANCEL, _who(), reason), wait)


def retry_step(
    ctx: typer.Context, target: TargetArgument, reason: ReasonOption, wait: WaitOption = 10.0
) -> None:
    """Try the step the run waits on (polling, or failed and waiting to retry) again now."""
    _control(ctx, target, Asked(ControlAction.RETRY_STEP, _who(), reason), wait)


def skip_step(
    ctx: typer.Context,
    target: TargetArgument,
    step: Annotated[str, typer.Argument(help="The wait step the run is at, e.g. wait_ready")],
    reason: ReasonOption,
    *,
    force: Annotated[
        bool, typer.Option("--force", help="Skip a wait that guards volumes (can make two writers)")
    ] = False,
    wait: WaitOption = 10.0,
) -> None:
    """Skip the wait step the run is at (only wait steps; one that guards volumes only with --force)."""
    try:
        chosen = Step(step)
    except ValueError:
        raise fail(f"step: unknown step {step!r} (e.g. wait_ready, wait_scaled_down)", 2) from None
    _control(ctx, target, Asked(ControlAction.SKIP_STEP, _who(), reason, step=chosen, force=force), wait)


def register(run_app: typer.Typer) -> None:
    """Add the control commands to ``failoverctl run``."""
    run_app.command("pause")(pause)
    run_app.command("resume")(resume)
    run_app.command("cancel")(cancel)
    run_app.command("retry-step")(retry_step)
    run_app.command("skip-step")(skip_step)
