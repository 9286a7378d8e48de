"""Rich renderings of a run for people: the live view of ``failoverctl watch`` and the demo.

Reads a :class:`fsm.run.Run` value and returns renderables; does no I/O of its own. Also the console
these are printed on (:func:`console`: plain, unwrapped lines when stdout is not a terminal) and a
live view that works on both (:func:`live_view`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fsm.plan import Phase
from fsm.run import Run, StepRecord
from fsm.status import PAUSED, paused_message


def shown_status(run: Run) -> str:
    """The run's status as ``watch`` and ``status`` show it: PAUSED while an operator holds it."""
    return PAUSED if run.paused and not run.terminal else run.status.value


# Width of a console that is not a terminal: lines are never wrapped, tables take their natural width.
PIPE_WIDTH = 100_000


def console(file: TextIO | None = None) -> Console:
    """A console on ``file`` (stdout): rich's own on a terminal; on a pipe or a file, one that never
    wraps a line (a copied ``export`` or command stays whole), has no width limit and no styles, so a
    script or a person reading a log gets exactly the text."""
    stream = file if file is not None else sys.stdout
    if stream.isatty():
        return Console(file=file)
    return Console(file=file, soft_wrap=True, no_color=True, highlight=False, emoji=False, width=PIPE_WIDTH)


class LiveView(Protocol):
    def update(self, renderable: RenderableType) -> None: ...


class _FinalView:
    """Off a terminal: keeps the latest view and prints it once, ended by a newline, at the end."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def update(self, renderable: RenderableType) -> None:
        self.renderable = renderable


@contextmanager
def live_view(out: Console, renderable: RenderableType, refresh_per_second: float = 4) -> Iterator[LiveView]:
    """A view redrawn in place on a terminal; elsewhere only the final view, printed once on leaving
    (rich's Live would print it without its last newline, running it into the next line)."""
    if out.is_terminal:
        with Live(renderable, console=out, refresh_per_second=refresh_per_second) as live:
            yield live
        return
    final = _FinalView(renderable)
    try:
        yield final
    finally:
        out.print(final.renderable)


_MARKS = {"done": ("✓", "green"), "skipped": ("↷", "dim"), "failed": ("✗", "bold red")}


def _seconds(record: StepRecord | None) -> str:
    if record is None or record.started_at is None or record.finished_at is None:
        return ""
    return f"{record.finished_at - record.started_at:.2f}s"


def _row(table: Table, name: str, cluster: str, record: StepRecord | None, current: bool) -> None:
    if record is not None and record.outcome in _MARKS:
        mark, style = _MARKS[record.outcome]
    elif current:
        mark, style = "▶", "bold yellow"
    else:
        mark, style = "·", "dim"
    detail = record.message if record else ""
    if current and record is not None and record.checks:
        detail = f"check {record.checks}: {detail}"
    table.add_row(Text(mark, style=style), name, cluster, _seconds(record), Text(detail, overflow="fold"))


def run_view(run: Run) -> Group:
    """The run's plan with each step's outcome, time and message; the current step highlighted."""
    title = (
        f"{run.failover} · group {run.group} · {run.kind.value} · {run.source_cluster} → "
        f"{run.target_cluster} · {shown_status(run)} ({run.state_name})"
    )
    table = Table(title=title, title_justify="left", expand=False, show_lines=False)
    for column in ("", "step", "cluster", "took", "detail"):
        table.add_column(column)
    for planned in run.plan:
        cluster = run.cluster_for(planned.side) or "dynamodb"
        current = run.at_step is planned.step
        _row(
            table,
            f"{planned.stage.value.lower()}/{planned.step.value}",
            cluster,
            run.steps.get(planned.step.value),
            current,
        )
    for index, action in enumerate(run.compensation):
        key = f"undo:{index}:{action.step.value}"
        current = run.state is Phase.COMPENSATING and run.compensation_index == index
        _row(
            table,
            f"compensation/{action.step.value}",
            action.cluster or "dynamodb",
            run.steps.get(key),
            current,
        )
    lines: list[Table | Text] = [table]
    for control in run.controls:
        lines.append(Text(f"control #{control.id}: {control.describe()}", style="magenta"))
    if run.paused and not run.terminal:
        lines.append(Text(paused_message(run), style="bold yellow"))
    elif run.message:
        lines.append(Text(run.message, style="green" if run.status.value == "SUCCESS" else "red"))
    return Group(*lines)


def summary(run: Run) -> str:
    total = run.total_seconds()
    downtime = run.downtime_seconds()
    parts = [f"{run.kind.value} {run.source_cluster}→{run.target_cluster}: {shown_status(run)}"]
    if total is not None:
        parts.append(f"total {total:.2f}s")
    parts.append(f"downtime {downtime:.2f}s" if downtime is not None else "downtime n/a")
    parts.append(f"{sum(r.attempts for r in run.steps.values())} step executions")
    return ", ".join(parts)
