"""Output off a terminal: whole lines, no styles, and a live view that ends its last line."""

from __future__ import annotations

import io

from rich.table import Table
from rich.text import Text

from producers.views import console, live_view


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_whole_unstyled_lines() -> None:
    stream = io.StringIO()
    long_line = "export FAILOVER_TIMING='" + "x" * 300 + "'"
    out = console(stream)
    out.print(long_line)
    out.print("[bold]sandbox up[/] ready")
    table = Table(title="runs")
    table.add_column("message")
    table.add_row("y" * 250)
    out.print(table)
    lines = stream.getvalue().splitlines()
    assert lines[:2] == [long_line, "sandbox up ready"]
    assert "\x1b[" not in stream.getvalue()
    assert any("y" * 250 in line for line in lines)  # a table cell is not wrapped either


def test_a_terminal_keeps_richs_own_console() -> None:
    assert console(_Terminal()).is_terminal
    assert not console(io.StringIO()).is_terminal


def test_the_live_view_off_a_terminal_prints_the_final_view_once_and_ends_its_line() -> None:
    stream = io.StringIO()
    out = console(stream)
    with live_view(out, Text("first")) as live:
        live.update(Text("second"))
        live.update(Text("last view"))
    out.print("summary")
    assert stream.getvalue() == "last view\nsummary\n"
