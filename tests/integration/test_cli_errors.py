"""The failoverctl error matrix: every command x every way its input or its surroundings can be wrong.

Each cell runs one command with one fault against a working world (two sandbox clusters with the group
"shop" active on site-a, a moto DynamoDB table that records it, the real Redis) and checks what a user
sees: a non-zero exit code and exactly one line on stderr, ``error: ...`` naming the culprit (the file,
the context, the group, the variable to fix), never a traceback. The cells run in-process with typer's
CliRunner (stderr captured apart); the long-running commands, and a few cells of the others, run as
real ``python -m producers.cli`` processes, which is what a user runs.

A new command is one line of ``ROWS``: its arguments (placeholders below) and the faults that apply.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fsm.models import GroupKey
from producers.cli import app
from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION, dynamodb_client
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.stack import SANDBOX_RUN_KEY
from workers.dynamo import DynamoCoordination

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "failover-orchestrator"

# --- the commands ------------------------------------------------------------------------------------
# Placeholders: {file} a valid Failover manifest, {kubeconfig}, {context} a kubeconfig context,
# {group} NS/NAME of the FailoverGroup, {failover} NS/NAME of a Failover, {run} a run id, {out} a file
# to write. Faults (columns): file (missing), yaml (not YAML), context (unknown), group (unknown),
# redis (down), dynamodb (down), region (no AWS region), settings (a bad FAILOVER_ variable).
# watcher, health-checker and worker would keep running (or exec Celery) when nothing is wrong;
# in-process they stop where they would have started running (_WouldRun).

# One row per command: (arguments, the faults that apply). KUBE: the kubeconfig faults (file, yaml,
# context); DYNAMO: those of a command that reads DynamoDB.
KUBE_FAULTS = "file yaml context"
DYNAMO = "dynamodb region settings"
# fmt: off
ROWS: dict[str, tuple[str, str]] = {
    "graph":          ("graph -m uptime -o {out}",                   "file"),
    "status":         ("status {failover}",                          "group redis settings"),
    "watch":          ("watch {run} --timeout 1",                    "group redis settings"),
    "history":        ("history {group}",                            f"group {DYNAMO}"),
    "lock show":      ("lock show {group}",                          f"group {DYNAMO}"),
    "lock release":   ("lock release {group} --reason test --yes",   f"group {DYNAMO}"),
    "run rebuild":    ("run rebuild {run} --group {group}",          f"group redis {DYNAMO}"),
    "dynamodb init":  ("dynamodb init",                              DYNAMO),
    "run pause":      ("run pause {run} --reason test",                "group redis settings"),
    "run resume":     ("run resume {run} --reason test",               "group redis settings"),
    "run cancel":     ("run cancel {run} --reason test",               "group redis settings"),
    "run retry-step": ("run retry-step {run} --reason test",           "group redis settings"),
    "run skip-step":  ("run skip-step {run} wait_ready --reason test", "group redis settings"),
    "group resolve":  ("group resolve {group} --active site-b --reason test --yes {kube}",
                                                                     f"{KUBE_FAULTS} group redis {DYNAMO}"),
    "plan":           ("plan -f {file} {kube}",                      f"{KUBE_FAULTS} group {DYNAMO}"),
    "group adopt":    ("group adopt {group} --active site-a --reason test --yes {kube}",
                                                                     f"{KUBE_FAULTS} group {DYNAMO}"),
    "group show":     ("group show {group} {clusters}",              f"{KUBE_FAULTS} group {DYNAMO}"),
    "drill":          ("drill {group} --to site-b --yes --report-dir {outdir} {kube}",
                                                                     f"{KUBE_FAULTS} group redis {DYNAMO}"),
    "report":         ("report {run} --group {group} -o {out} {kube}",
                                                                     f"{KUBE_FAULTS} group redis {DYNAMO}"),
    "validate":       ("validate {group} {kube}",                    f"{KUBE_FAULTS} group settings"),
    "submit":         ("submit -f {file} {kube}",                    f"{KUBE_FAULTS} group {DYNAMO}"),
    "watcher":        ("watcher {clusters}",                         f"{KUBE_FAULTS} region settings"),
    "health-checker": ("health-checker {clusters}",                  f"{KUBE_FAULTS} region settings"),
    "worker":         ("worker",                                     "settings"),
}
# fmt: on
KUBE = "--kubeconfig {kubeconfig} --context {context}"
CLUSTERS = "--kubeconfig {kubeconfig} --cluster {context}"  # the producers name their clusters

# Cells that run as a real process, what a user runs: no traceback escapes there either.
AS_PROCESS = {
    ("status", "redis"),
    ("history", "region"),
    ("submit", "yaml"),
    ("graph", "file"),
    ("lock show", "group"),
}


@dataclass
class World:
    values: dict[str, str]  # placeholder values when nothing is wrong
    env: dict[str, str]  # the environment when nothing is wrong
    tmp: Path
    unused_port: int


@dataclass
class Fault:
    """What a fault changes (placeholders, environment) and what the error line must name."""

    names: str
    values: dict[str, str] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)


def _fault(kind: str, world: World) -> Fault:
    tmp, port = world.tmp, world.unused_port
    missing = str(tmp / "missing" / "nothing.yaml")
    faults = {
        "file": Fault("missing/nothing.yaml", {"file": missing, "kubeconfig": missing, "out": missing}),
        "yaml": Fault("bad.yaml", {"file": str(tmp / "bad.yaml"), "kubeconfig": str(tmp / "bad.yaml")}),
        "context": Fault("nowhere", {"context": "nowhere"}),
        "group": Fault(
            "nowhere",
            {
                "group": "shop/nowhere",
                "failover": "shop/nowhere",
                "run": "nowhere",
                "file": str(tmp / "nowhere.yaml"),
            },
        ),
        "redis": Fault("FAILOVER_REDIS_URL", env={"FAILOVER_REDIS_URL": f"redis://127.0.0.1:{port}/0"}),
        "dynamodb": Fault(
            "FAILOVER_DYNAMODB_ENDPOINT_URL",
            env={"FAILOVER_DYNAMODB_ENDPOINT_URL": f"http://127.0.0.1:{port}"},
        ),
        "region": Fault(
            "AWS_REGION", env={"AWS_DEFAULT_REGION": None, "AWS_REGION": None, "FAILOVER_AWS_REGION": None}
        ),
        "settings": Fault("FAILOVER_VISIBILITY_TIMEOUT", env={"FAILOVER_VISIBILITY_TIMEOUT": "1"}),
    }
    return faults[kind]


def _cells() -> list[tuple[str, str]]:
    return [(name, kind) for name, (_, kinds) in ROWS.items() for kind in kinds.split()]


# --- the world -----------------------------------------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


def _manifest(group: str) -> dict[str, object]:
    return {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": f"errors-{uuid.uuid4().hex[:6]}", "namespace": "shop"},
        "spec": {
            "targetCluster": "site-b",
            "failoverMode": "CONSISTENCY",
            "failoverGroups": [{"name": group}],
        },
    }


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, redis_server_url: str, dynamodb_endpoint: str
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("cli-errors")
    table = f"cli-errors-{uuid.uuid4().hex[:8]}"
    client = dynamodb_client(dynamodb_endpoint)
    coordination = DynamoCoordination(table, client=client)
    coordination.ensure_table()
    coordination.set_initial_owner(GroupKey(operator_id=OPERATOR, namespace="shop", name="shop"), "site-a")
    (tmp / "failover.yaml").write_text(yaml.safe_dump(_manifest("shop")))
    (tmp / "nowhere.yaml").write_text(yaml.safe_dump(_manifest("nowhere")))
    (tmp / "bad.yaml").write_text("kind: Failover\nspec: [unclosed\n")
    prefix = f"cli-errors-{uuid.uuid4().hex[:8]}:"
    with SandboxFleet(["site-a", "site-b"], kubeconfig_path=tmp / "kubeconfig") as fleet:
        load_sample_fleet(fleet, active="site-a")
        env = {
            "FAILOVER_REDIS_URL": redis_server_url,
            "FAILOVER_KEY_PREFIX": prefix,
            "FAILOVER_BROKER_PREFIX": prefix,
            "FAILOVER_QUEUE": f"{prefix}steps",
            "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
            "FAILOVER_DYNAMODB_TABLE": table,
            "FAILOVER_DYNAMODB_RETRY_SECONDS": "0.3",
            "FAILOVER_OPERATOR_ID": OPERATOR,
            "FAILOVER_CLUSTERS": '["site-a", "site-b"]',
            "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "COLUMNS": "200",
        }
        values = {
            "file": str(tmp / "failover.yaml"),
            "kubeconfig": str(fleet.kubeconfig_for("operator")),
            "context": "site-a",
            "group": "shop/shop",
            "failover": "shop/move-shop",
            "run": "0123456789abcdef0123",
            "out": str(tmp / "graph.md"),
            "outdir": str(tmp / "reports"),
        }
        yield World(values, env, tmp, _unused_port())
    coordination.close()
    client.close()


def _command(name: str, world: World, fault: Fault | None) -> tuple[list[str], dict[str, str | None]]:
    template = ROWS[name][0]
    values = {**world.values, **(fault.values if fault else {})}
    template = template.replace("{kube}", KUBE).replace("{clusters}", CLUSTERS)
    args = template.format(**values).split()
    env: dict[str, str | None] = {**world.env, **(fault.env if fault else {})}
    return args, env


class _WouldRun(BaseException):
    """Raised where a long-running command would have started running: it found nothing wrong. A
    BaseException, so that neither failoverctl's error handling nor CliRunner swallows it."""


def _would_run(*_: object, **__: object) -> None:
    raise _WouldRun


def _run_in_process(
    args: list[str], env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    for variable in (
        "FAILOVER_AWS_REGION",
        "AWS_REGION",
        "REDIS_URL",
        "FAILOVER_KUBECONFIG",
        "FAILOVERCTL_DEBUG",
    ):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    monkeypatch.setattr("producers.cli_producers._in_foreground", _would_run)
    monkeypatch.setattr("producers.cli.os.execv", _would_run)
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # escaped the CLI's own handling: the traceback a user would see
    return result.exit_code, result.stdout, result.stderr


def _run_as_process(args: list[str], env: dict[str, str | None]) -> tuple[int, str, str]:
    base = {
        k: v for k, v in os.environ.items() if k not in ("FAILOVER_AWS_REGION", "AWS_REGION", "REDIS_URL")
    }
    merged = {**base, "PYTHONPATH": str(ROOT), **env}
    result = subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env={k: v for k, v in merged.items() if v is not None},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(("name", "kind"), _cells(), ids=[f"{n}-{k}" for n, k in _cells()])
def test_each_error_is_one_line_naming_the_culprit(
    name: str, kind: str, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = _fault(kind, world)
    args, env = _command(name, world, fault)
    if (name, kind) in AS_PROCESS:
        code, stdout, stderr = _run_as_process(args, env)
    else:
        code, stdout, stderr = _run_in_process(args, env, monkeypatch)

    assert code != 0, stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    [line] = lines
    assert line.startswith("error: "), line
    assert fault.names in line, line
    assert "Traceback" not in stdout + stderr


# --- what works without what it does not need -------------------------------------------------------


def test_commands_that_read_only_redis_need_no_aws_region(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = _command("status", world, _fault("region", world))
    code, _stdout, stderr = _run_in_process(["status"], env, monkeypatch)
    assert (code, stderr) == (0, ""), stderr


@pytest.mark.parametrize("name", ["history", "lock show"])
def test_a_known_group_is_no_error(name: str, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    args, env = _command(name, world, None)
    code, _stdout, stderr = _run_in_process(args, env, monkeypatch)
    assert (code, stderr) == (0, ""), stderr


def test_adopting_with_redis_down_records_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adopting on a cluster that is not active yet needs the workers (Redis) to settle the others:
    with Redis down it says so before recording any owner (a fresh operatorID: a group with none)."""
    fault = _fault("redis", world)
    operator = f"adopt-{uuid.uuid4().hex[:6]}"
    args, env = _command("group adopt", world, fault)
    args[args.index("--active") + 1] = "site-b"  # site-a is active: site-b needs RESOLVE runs
    code, stdout, stderr = _run_in_process([*args, "--operator-id", operator], env, monkeypatch)
    assert code != 0, stdout
    assert len(stderr.splitlines()) == 1 and fault.names in stderr, stderr
    coordination = DynamoCoordination(
        world.env["FAILOVER_DYNAMODB_TABLE"],
        client=dynamodb_client(world.env["FAILOVER_DYNAMODB_ENDPOINT_URL"]),
    )
    try:
        assert (
            coordination.active_cluster(GroupKey(operator_id=operator, namespace="shop", name="shop")) is None
        )
    finally:
        coordination.close()


def test_a_report_of_a_run_redis_does_not_hold_asks_for_its_group(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = _command("report", world, None)
    code, _stdout, stderr = _run_in_process(["report", "nowhere"], env, monkeypatch)
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("error: run nowhere is not in Redis") and "--group" in stderr, stderr
