"""Settings that cannot be read end a failoverctl command with one line on stderr naming the variable
and exit code 1, as every other error does; commands that need no settings are not affected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from producers.cli import app

runner = CliRunner()

BAD_SETTINGS = [
    ("FAILOVER_CLUSTERS", "not json", "FAILOVER_CLUSTERS: not valid JSON"),
    ("FAILOVER_TIMING", "{bad", "FAILOVER_TIMING: not valid JSON"),
    ("FAILOVER_TIMING", '{"poll_max": "soon"}', "FAILOVER_TIMING (poll_max): Input should be a valid number"),
    ("FAILOVER_REDIS_URL", "notaurl", "FAILOVER_REDIS_URL: expected redis://HOST:PORT/DB"),
    ("FAILOVER_METRICS_PORT", "ninety", "FAILOVER_METRICS_PORT: Input should be a valid integer"),
    ("FAILOVER_VISIBILITY_TIMEOUT", "10", "settings: FAILOVER_VISIBILITY_TIMEOUT (10s) must be at least 4x"),
    ("FAILOVER_HEARTBEAT_TIMEOUT", "1", "settings: FAILOVER_HEARTBEAT_TIMEOUT (1s) must be at least twice"),
    ("FAILOVER_DYNAMODB_ENDPOINT_URL", "", "FAILOVER_DYNAMODB_ENDPOINT_URL: empty: unset it"),
    (
        "FAILOVER_DYNAMODB_ENDPOINT_URL",
        "localhost:8000",
        "FAILOVER_DYNAMODB_ENDPOINT_URL: expected http(s)://",
    ),
    ("FAILOVER_REDIS_URL", "redis://h:abc/0", "FAILOVER_REDIS_URL: Port could not be cast to integer"),
    ("FAILOVER_LEASE_SECONDS", "0", "FAILOVER_LEASE_SECONDS: Input should be greater than 0"),
    ("FAILOVER_METRICS_PORT", "70000", "FAILOVER_METRICS_PORT: Input should be less than or equal to 65535"),
]
COMMANDS = [["status"], ["history", "shop/shop"], ["lock", "show", "shop/shop"], ["dynamodb", "init"]]


@pytest.mark.parametrize(("variable", "value", "expected"), BAD_SETTINGS)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_bad_setting_is_one_line_naming_it_and_exit_1(
    command: list[str], variable: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)

    result = runner.invoke(app, command)

    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: settings: ") and expected in line, line
    assert line.endswith("; fix it in the environment")
    assert result.stdout == ""


def test_a_command_that_needs_no_settings_runs_with_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILOVER_CLUSTERS", "not json")

    result = runner.invoke(app, ["graph", "--mode", "uptime"])

    assert result.exit_code == 0, result.output
    assert "stateDiagram-v2" in result.output


def test_the_console_script_prints_no_traceback_for_a_bad_setting() -> None:
    env = {**os.environ, "FAILOVER_REDIS_URL": "notaurl"}
    result = subprocess.run(
        [sys.executable, "-m", "producers.cli", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: settings: FAILOVER_REDIS_URL: expected redis://HOST:PORT/DB (or rediss://, unix://), "
        "got 'notaurl'; fix it in the environment"
    ]


def test_aws_region_is_read_from_aws_region_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.settings import Settings

    monkeypatch.delenv("FAILOVER_AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")  # what EKS (IRSA, Pod Identity) sets in pods
    assert Settings().aws_region == "eu-west-3"
    monkeypatch.setenv("FAILOVER_AWS_REGION", "eu-central-1")
    assert Settings().aws_region == "eu-central-1"
