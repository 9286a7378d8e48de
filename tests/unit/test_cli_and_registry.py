"""The console script's graph command, and that every step is defined everywhere it must be."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsm.machine import machine_states
from fsm.plan import CATALOGUE, SEQUENCES, PlanKind, Step, StepType, state_name
from producers.cli import app
from workers.app import celery_config
from workers.engine import task_name
from workers.settings import Settings
from workers.steps import STEPS
from workers.tasks import CelerySender
from workers.tasks import app as celery_app

runner = CliRunner()


@pytest.mark.parametrize("mode", ["consistency", "uptime"])
def test_graph_prints_the_modes_machine_as_mermaid(mode: str) -> None:
    result = runner.invoke(app, ["graph", "--mode", mode])
    assert result.exit_code == 0, result.output
    assert "stateDiagram-v2" in result.output
    for state in machine_states(PlanKind(mode.upper())):
        assert f'state "{state_name(state)}"' in result.output
    assert "COMPENSATING --> FAILED: undo_finished" in result.output


def test_graph_refuses_an_unknown_mode_naming_the_option() -> None:
    result = runner.invoke(app, ["graph", "--mode", "fast"])
    assert result.exit_code == 2
    assert "--mode" in result.output


def test_every_step_has_a_definition_an_implementation_a_state_label_and_a_task() -> None:
    for step in Step:
        info = CATALOGUE[step]
        assert step in STEPS, step
        assert info.label.isupper() and " " not in info.label, step
        assert task_name(step) in celery_app.tasks
        # Steps are data: effects and waits name their objects and role; only coordination is code.
        if info.type is StepType.EFFECT:
            assert info.objects and info.role is not None, step
    planned = {s for sequence in SEQUENCES.values() for s, _, _ in sequence}
    assert planned | {Step.ABORT} == set(Step)
    assert len({info.label for info in CATALOGUE.values()}) == len(Step)


def test_undo_steps_are_steps_of_the_catalogue() -> None:
    for info in CATALOGUE.values():
        for undo in info.undo:
            assert CATALOGUE[undo].type in (StepType.EFFECT, StepType.WAIT)


def test_celery_is_configured_for_idempotent_redelivery() -> None:
    config = celery_config(Settings(redis_url="redis://x", visibility_timeout=600))
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == "json"
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 2
    one = celery_config(Settings(redis_url="redis://x", visibility_timeout=600, prefetch_multiplier=1))
    assert one["worker_prefetch_multiplier"] == 1
    assert config["worker_send_task_events"] and config["task_send_sent_event"]
    assert config["broker_transport_options"]["visibility_timeout"] == 600


def test_a_visibility_timeout_too_close_to_the_countdowns_is_refused() -> None:
    with pytest.raises(ValueError, match="FAILOVER_VISIBILITY_TIMEOUT"):
        Settings(redis_url="redis://x", visibility_timeout=60)


class _RecordingCelery:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[object], float | None, str]] = []

    def send_task(
        self,
        name: str,
        args: list[object],
        *,
        countdown: float | None,
        queue: str,
        argsrepr: str,
        kwargsrepr: str,
    ) -> None:
        assert (argsrepr, kwargsrepr) == (repr(args), "{}")  # what Flower shows, as Celery would render it
        self.calls.append((name, args, countdown, queue))


def test_steps_can_be_routed_to_a_queue_per_cluster() -> None:
    recorder = _RecordingCelery()
    sender = CelerySender(recorder, Settings(redis_url="redis://x", per_cluster_queues=True))  # type: ignore[arg-type]
    sender.send("failover.scale_down_workloads", "r1", 3, countdown=0.0, cluster="site-a")
    sender.send("failover.acquire_lock", "r1", 4, countdown=1.5, cluster=None)
    assert recorder.calls == [
        ("failover.scale_down_workloads", ["r1", 3], None, "failover.site-a"),
        ("failover.acquire_lock", ["r1", 4], 1.5, "failover"),
    ]


def test_graph_as_dot_and_as_a_png_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["graph", "--mode", "consistency", "--format", "dot"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith('digraph "failover CONSISTENCY"')
    assert 'COMPENSATING -> FAILED [label="undo_finished"]' in result.output
    png = tmp_path / "consistency.png"
    result = runner.invoke(
        app, ["graph", "--mode", "consistency", "--format", "png", "--output-file", str(png)]
    )
    if shutil.which("dot") is None:
        assert result.exit_code == 1 and "apt-get install graphviz" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_png_needs_an_output_file() -> None:
    result = runner.invoke(app, ["graph", "--mode", "uptime", "--format", "png"])
    assert result.exit_code == 2 and "--output-file" in result.output


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fsm.plan import Timing

    original = Settings(
        redis_url="redis://h:1/2",
        queue="q",
        clusters=["a", "b"],
        per_cluster_queues=True,
        timing=Timing(poll_initial=0.5),
        broker_transport_extra={"unacked_restore_interval": 1},
        kubeconfig="/k",
        visibility_timeout=999,
    )
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def _commands() -> list[list[str]]:
    """Every command path of failoverctl: ["graph"], ["group", "adopt"], ..."""
    import typer.main

    def walk(command: object, path: list[str]) -> list[list[str]]:
        found = [path] if path else []
        for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
            found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
def test_every_command_has_help_that_says_what_it_does_in_one_line(path: list[str]) -> None:
    """`--help` renders, and the summary the command list shows is one line (its docstring's first
    paragraph; a hard line break there shows in the list as a broken sentence)."""
    import typer.main

    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    summary = (command.help or "").strip().split("\n\n")[0]
    assert summary and "\n" not in summary, summary
    assert summary.split(".")[0] in " ".join(result.output.split())
