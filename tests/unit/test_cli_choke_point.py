"""failoverctl's choke point: whatever escapes a command becomes one line on stderr and exit code 1;
exits, usage errors and aborts keep their own codes; FAILOVERCTL_DEBUG shows the traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from producers.cli_common import FailoverctlGroup
from workers.errors import PermanentError

app = typer.Typer(cls=FailoverctlGroup)


@app.command()
def boom(kind: str) -> None:
    if kind == "orchestrator":
        raise PermanentError("the lock is gone", cluster="site-a", obj="FailoverGroup shop/shop")
    if kind == "file":
        open("/nonexistent/manifest.yaml")  # noqa: SIM115 - the OSError is the point
    if kind == "bug":
        raise KeyError("spec")
    if kind == "exit":
        raise typer.Exit(3)


@app.command()
def other() -> None:
    """Only here so that ``boom`` is a subcommand, as failoverctl's commands are."""


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("orchestrator", "error: FailoverGroup shop/shop on cluster 'site-a': the lock is gone"),
        ("file", "error: /nonexistent/manifest.yaml: No such file or directory"),
        (
            "bug",
            "error: unexpected KeyError: 'spec' "
            "(set FAILOVERCTL_DEBUG=1 for the traceback, and please report it)",
        ),
    ],
)
def test_an_escaped_error_is_one_line_and_exit_1(
    kind: str, line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAILOVERCTL_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["boom", kind])
    assert (result.exit_code, result.stderr.splitlines(), result.stdout) == (1, [line], "")


def test_exits_and_usage_errors_keep_their_codes() -> None:
    assert CliRunner().invoke(app, ["boom", "exit"]).exit_code == 3
    assert CliRunner().invoke(app, ["boom"]).exit_code == 2


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILOVERCTL_DEBUG", "1")
    result = CliRunner().invoke(app, ["boom", "bug"])
    assert isinstance(result.exception, KeyError)
