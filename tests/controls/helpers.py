"""Holding a run in a wait step (a sandbox controller that lags) and driving ``failoverctl run``."""

from __future__ import annotations

import subprocess

from fsm.plan import Step, Timing
from fsm.run import Run
from tests.chaos.conftest import CONTROLLERS, TIMING, ChaosStack

LAG = 3600.0  # a controller this slow never catches up during a test: the wait step holds


def lag(stack: ChaosStack, cluster: str, knob: str) -> None:
    setattr(stack.fleet[cluster].controllers, knob, LAG)


def catch_up(stack: ChaosStack, cluster: str, knob: str) -> None:
    setattr(stack.fleet[cluster].controllers, knob, CONTROLLERS[knob])


def submit(stack: ChaosStack, mode: str, name: str, **timing: float) -> str:
    """A run moving the group from site-a to site-b, with the chaos timing changed by ``timing``
    (by default, wait steps get 5 minutes: a run held on purpose must not time out while held)."""
    chosen: Timing = TIMING.model_copy(update={"wait_timeout": 300.0, **timing})
    return stack.submit(mode, "site-a", "site-b", name, timing=chosen)


def waiting_in(stack: ChaosStack, run_id: str, step: Step, timeout: float = 60.0) -> Run:
    """The run once it checked ``step`` at least once and waits to check it again."""

    def held(run: Run) -> bool:
        record = run.steps.get(step.value)
        return run.at_step is step and record is not None and record.checks > 0

    return stack.wait_for(run_id, held, timeout)


def control(stack: ChaosStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``failoverctl run ARGS`` with this stack's settings, in this process (the same code as the
    command line, without a Python start-up per call on a busy test machine)."""
    from typer.testing import CliRunner

    from producers.cli import app

    env = {
        **stack.env,
        "FAILOVER_KUBECONFIG": str(stack.fleet.kubeconfig_for("operator")),
        "FAILOVER_LOG_LEVEL": "WARNING",
        "COLUMNS": "300",
    }
    result = CliRunner().invoke(app, ["run", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(
        ["failoverctl", "run", *args], result.exit_code, result.stdout, result.stderr
    )


def control_process(stack: ChaosStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``failoverctl run ARGS`` as an operator would type it, in a process of its own."""
    return stack.cli("run", *args)


def explain(result: subprocess.CompletedProcess[str], stack: ChaosStack) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}\n{stack.worker_logs()[-3000:]}"
