"""``failoverctl submit``, ``watcher`` and ``health-checker`` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from producers.cli import app
from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION
from sandbox.kube import SandboxFleet
from sandbox.stack import SANDBOX_RUN_KEY
from tests.producers.conftest import failover_manifest
from workers.dynamo import DynamoCoordination

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def kubeconfig(
    *,
    fleet: SandboxFleet,
    monkeypatch: pytest.MonkeyPatch,
    coordination: DynamoCoordination,
    dynamodb_endpoint: str,
    redis_server_url: str,
    prefix: str,
) -> Path:
    """The sandbox's kubeconfig, and the DynamoDB table (site-a owns "shop") that submit reads the
    owners from."""
    values = {
        "FAILOVER_KUBECONFIG": str(fleet.kubeconfig_for("operator")),
        "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
        "FAILOVER_DYNAMODB_TABLE": coordination.table_name,
        "FAILOVER_REDIS_URL": redis_server_url,
        "FAILOVER_KEY_PREFIX": prefix,
        "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FAILOVER_CLUSTERS", raising=False)
    return fleet.kubeconfig_for("operator")


def write(tmp_path: Path, manifest: dict[str, Any]) -> Path:
    path = tmp_path / "failover.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def failovers(fleet: SandboxFleet) -> dict[str, list[str]]:
    return {c.name: [o["metadata"]["name"] for o in c.store.list("Failover")[0]] for c in fleet}


def test_submit_creates_the_failover_in_the_target_cluster(
    fleet: SandboxFleet, kubeconfig: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["submit", "-f", str(write(tmp_path, failover_manifest()))])

    assert result.exit_code == 0, result.output
    assert "failover shop/move-shop created in cluster site-b" in result.output
    assert failovers(fleet) == {"site-a": [], "site-b": ["move-shop"]}
    created = fleet["site-b"].store.get("Failover", "shop", "move-shop")
    assert created["spec"]["failoverMode"] == "CONSISTENCY" and "status" not in created


def test_submitting_a_name_that_exists_says_so_and_how_to_see_it(
    fleet: SandboxFleet, kubeconfig: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, failover_manifest())
    assert runner.invoke(app, ["submit", "-f", str(path)]).exit_code == 0
    before = fleet["site-b"].store.get("Failover", "shop", "move-shop")

    result = runner.invoke(app, ["submit", "-f", str(path)])

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: Failover shop/move-shop already exists in cluster site-b: ")
    assert "`failoverctl status shop/move-shop`" in line
    assert "`kubectl --context site-b get failover -n shop move-shop`" in line
    assert result.stdout == ""
    assert fleet["site-b"].store.get("Failover", "shop", "move-shop") == before  # nothing changed


def test_submit_with_a_context_and_a_generated_name(
    fleet: SandboxFleet, kubeconfig: Path, tmp_path: Path
) -> None:
    manifest = failover_manifest()
    manifest["metadata"] = {"generateName": "drill-", "namespace": "shop"}

    result = runner.invoke(app, ["submit", "-f", str(write(tmp_path, manifest)), "--context", "site-a"])

    assert result.exit_code == 0, result.output
    [name] = failovers(fleet)["site-a"]
    assert name.startswith("drill-") and f"failover shop/{name} created in cluster site-a" in result.output


@pytest.mark.parametrize(
    "case",
    [
        ({"failoverMode": "FAST"}, "spec.failoverMode: Input should be 'CONSISTENCY' or 'UPTIME'"),
        ({"targetCluster": "site-z"}, "spec.targetCluster: unknown cluster 'site-z'"),
        ({"failoverGroups": []}, "spec.failoverGroups: List should have at least 1 item"),
    ],
)
def test_submit_refuses_an_invalid_failover_in_one_line_naming_the_field(
    fleet: SandboxFleet, kubeconfig: Path, tmp_path: Path, case: tuple[dict[str, Any], str]
) -> None:
    spec, words = case
    manifest = failover_manifest()
    manifest["spec"].update(spec)
    path = write(tmp_path, manifest)

    result = runner.invoke(app, ["submit", "-f", str(path)])

    assert result.exit_code == 1
    assert result.output.startswith(f"error: {path}: {words}")
    assert len(result.output.strip().splitlines()) == 1
    assert failovers(fleet) == {"site-a": [], "site-b": []}


def test_submit_reports_a_cluster_that_does_not_answer(
    fleet: SandboxFleet, kubeconfig: Path, tmp_path: Path
) -> None:
    fleet["site-b"].set_down(True)

    result = runner.invoke(app, ["submit", "-f", str(write(tmp_path, failover_manifest()))])

    assert result.exit_code == 1
    assert (
        result.output.startswith("error: ")
        and "site-b" in result.output
        and "Connection refused" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["watcher", "health-checker"])
def test_the_long_running_commands_refuse_a_missing_kubeconfig_in_one_line(
    tmp_path: Path, command: str
) -> None:
    result = runner.invoke(app, [command, "--kubeconfig", str(tmp_path / "missing")])

    assert result.exit_code == 1
    assert result.output.startswith("error: kubeconfig ") and len(result.output.strip().splitlines()) == 1
