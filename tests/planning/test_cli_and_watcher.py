"""`failoverctl plan` and `failoverctl validate` through typer's CliRunner, and dry-run Failovers in
the watcher: the plan goes to the Failover's status and nothing is submitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from producers.cli import app
from producers.kube import ClusterClient
from producers.watcher import FailoverWatcher
from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION
from sandbox.kube import SandboxFleet, sample_manifests
from sandbox.stack import SANDBOX_RUN_KEY
from tests.planning.conftest import OPERATOR, failover_manifest
from tests.planning.test_planning import versions
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination

runner = CliRunner()


@pytest.fixture
def env(
    *,
    fleet: SandboxFleet,
    dynamodb_endpoint: str,
    table: str,
    coordination: DynamoCoordination,
    redis_server_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
        "FAILOVER_DYNAMODB_TABLE": table,
        "FAILOVER_REDIS_URL": redis_server_url,
        "FAILOVER_KEY_PREFIX": prefix,
        "FAILOVER_BROKER_PREFIX": prefix,
        "FAILOVER_QUEUE": f"{prefix}steps",
        "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        "FAILOVER_OPERATOR_ID": OPERATOR,
        "FAILOVER_KUBECONFIG": str(fleet.kubeconfig_path),
        "FAILOVER_CLUSTERS": '["site-a", "site-b"]',
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "COLUMNS": "250",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def write(path: Path, *documents: object) -> Path:
    path.write_text(yaml.safe_dump_all(documents))
    return path


@pytest.mark.usefixtures("env")
def test_plan_prints_every_change_per_cluster_and_changes_nothing(
    fleet: SandboxFleet, tmp_path: Path
) -> None:
    before = versions(fleet)
    manifest = write(tmp_path / "failover.yaml", failover_manifest())

    result = runner.invoke(app, ["plan", "-f", str(manifest), "--context", "site-a"])

    assert result.exit_code == 0, result.output
    out = result.output
    assert "cluster site-a (source):" in out and "cluster site-b (target):" in out
    source, target = out.split("cluster site-b (target):")
    assert (
        "~ Deployment shop/web: spec.replicas 3 -> 0; annotations +failover.hahomelabs.com/replicas=3, "
        "+kustomize.toolkit.fluxcd.io/reconcile=disabled" in source
    )
    assert "~ VolumeReplication shop/db-data: spec.replicationState secondary -> primary" in target
    assert "18 to change" in out and "Nothing was changed." in out
    assert versions(fleet) == before


@pytest.mark.usefixtures("env")
def test_plan_from_a_group_file_as_json_shows_skipped_steps(tmp_path: Path) -> None:
    [group] = [d for d in sample_manifests() if d["kind"] == "FailoverGroup"]
    group["spec"].pop("networkResources")
    manifest = write(tmp_path / "failover.yaml", failover_manifest(mode="UPTIME"))
    groups = write(tmp_path / "group.yaml", group)

    result = runner.invoke(app, ["plan", "-f", str(manifest), "-g", str(groups), "-o", "json"])

    assert result.exit_code == 0, result.output
    [report] = json.loads(result.output)
    skipped = {s["step"]: s["skipReason"] for s in report["steps"] if s["skipReason"]}
    assert set(skipped) == {"enable_network", "disable_network"}
    assert report["mode"] == "UPTIME" and report["problems"] == []


@pytest.mark.usefixtures("env")
def test_plan_refuses_a_target_that_is_already_active(tmp_path: Path) -> None:
    manifest = write(tmp_path / "failover.yaml", failover_manifest(target="site-a"))
    result = runner.invoke(app, ["plan", "-f", str(manifest), "--context", "site-b"])
    assert result.exit_code == 1
    assert "spec.targetCluster" in result.output and "already the active cluster" in result.output


@pytest.mark.usefixtures("env")
def test_validate_passes_then_lists_problems(fleet: SandboxFleet) -> None:
    result = runner.invoke(app, ["validate", "shop/shop", "--context", "site-a"])
    assert result.exit_code == 0, result.output
    assert "all 9 objects found on every cluster" in result.output

    fleet["site-b"].store.delete("CronJob", "shop", "report")
    result = runner.invoke(app, ["validate", "shop/shop", "--context", "site-a"])
    assert result.exit_code == 1
    assert "CronJob shop/report on cluster site-b: not found" in result.output

    result = runner.invoke(app, ["validate", "shop/nope", "--context", "site-a"])
    assert result.exit_code == 1 and "does not exist in cluster site-a" in result.output


def test_watcher_writes_the_plan_of_a_dry_run_and_submits_nothing(
    fleet: SandboxFleet, orchestrator: Orchestrator, clients: dict[str, ClusterClient]
) -> None:
    watcher = FailoverWatcher(orchestrator, clients, operator_id=OPERATOR)
    fleet["site-a"].store.put(failover_manifest(dryRun=True))
    obj = fleet["site-a"].store.get("Failover", "shop", "move-shop")
    before = versions(fleet)

    assert watcher.handle("site-a", obj).action.value == "dry_run"

    status = fleet["site-a"].store.get("Failover", "shop", "move-shop")["status"]
    assert status["status"] == "SUCCESS"
    [condition] = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("DryRun", "True", "Planned")
    assert "18 to change" in condition["message"]
    plan = {entry["cluster"]: entry["changes"] for entry in status["plan"]}
    assert {
        "step": "scale_down_workloads",
        "object": "StatefulSet shop/cache",
        "change": "spec.replicas 2 -> 0; annotations +failover.hahomelabs.com/replicas=2, "
        "+kustomize.toolkit.fluxcd.io/reconcile=disabled",
    } in plan["site-a"]
    assert len(plan["site-b"]) == 9 and status["skippedSteps"] == []
    assert orchestrator.runs(failover="shop/move-shop") == []
    assert versions(fleet) == before
    # Seen again: a finished dry run is left alone.
    again = fleet["site-a"].store.get("Failover", "shop", "move-shop")
    assert watcher.handle("site-a", again).action.value == "skip"


def test_watcher_dry_run_with_a_missing_object_stays_pending_naming_it(
    fleet: SandboxFleet, orchestrator: Orchestrator, clients: dict[str, ClusterClient]
) -> None:
    watcher = FailoverWatcher(orchestrator, clients, operator_id=OPERATOR)
    fleet["site-b"].store.delete("Deployment", "shop", "web")
    fleet["site-a"].store.put(failover_manifest(dryRun=True))

    watcher.handle("site-a", fleet["site-a"].store.get("Failover", "shop", "move-shop"))

    status = fleet["site-a"].store.get("Failover", "shop", "move-shop")["status"]
    assert status["status"] == "PENDING"
    assert "Deployment shop/web on cluster site-b: not found" in status["message"]
    assert status["conditions"][0]["reason"] == "PlanHasProblems"
    assert orchestrator.runs(failover="shop/move-shop") == []
