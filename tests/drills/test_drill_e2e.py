"""``failoverctl drill`` and ``failoverctl report`` on the real stack: two sandbox clusters with the
sample group, a moto DynamoDB, the real Redis and a real Celery worker with the production adapters
(the autofailover ``world``), the CLI acting as the operator's identity of deploy/rbac.

A drill with ``--back`` fails over and back (both runs SUCCESS, both marked drill in history, the
report written as JSON and HTML, the verdict PASS against a generous objective); the forecast then
counts them in ``failoverctl plan``, the FailoverGroup status and the Prometheus gauge. A drill that
misses its objective exits 1 with the report written; ``report`` renders it from Redis and, once Redis
let the run go, from history. A suspended, diverged or unhealthy group is refused with nothing run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from producers.cli import app
from producers.group_status import GroupStatusWriter
from sandbox.dynamo import AWS_DUMMY_ENV
from sandbox.stack import component_env, worker_env
from tests.autofailover.conftest import OPERATOR, SHOP, World
from tests.chromium import Elements, dump_dom
from tests.planning.conftest import failover_manifest
from workers.ports import Divergence

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
runner = CliRunner()


def cli(world: World, *args: str) -> Any:
    settings = world.orchestrator.settings
    env = component_env(worker_env(settings, **AWS_DUMMY_ENV), world.fleet.kubeconfig_for, "operator")
    return runner.invoke(app, list(args), env={**env, "COLUMNS": "200"})


def drill(world: World, report_dir: Path, *extra: str) -> Any:
    return cli(
        world, "drill", "shop/shop", "--to", "site-b", "--context", "site-a", "--report-dir", str(report_dir),
        "--yes", "--timeout", "120", *extra,
    )  # fmt: skip


def reports(directory: Path) -> tuple[dict[str, Any], Path]:
    [found] = directory.glob("drill-shop-*.json")
    return json.loads(found.read_text()), found.with_suffix(".html")


@pytest.fixture
def group_spec() -> dict[str, Any]:
    return {"objectives": {"rto": "2m"}}


def test_a_drill_there_and_back_passes_and_feeds_the_forecast(world: World, tmp_path: Path) -> None:
    result = drill(world, tmp_path / "out", "--back")
    assert result.exit_code == 0, result.output + world.worker_log()
    assert "drill verdict: PASS" in result.output
    report, page = reports(tmp_path / "out")
    assert report["verdict"] == "PASS" and report["objectiveSeconds"] == 120.0
    there, back = report["runs"]
    assert (there["sourceCluster"], there["targetCluster"]) == ("site-a", "site-b")
    assert (back["sourceCluster"], back["targetCluster"]) == ("site-b", "site-a")
    for run in (there, back):
        assert run["outcome"] == "SUCCESS" and run["drill"] and run["verdict"] == "PASS"
        assert 0 < run["downtimeSeconds"] <= run["rtoSeconds"] <= 120.0
        assert {s["cluster"] for s in run["steps"]} == {"site-a", "site-b", "DynamoDB (coordination)"}
    dom = Elements(dump_dom(page, tmp_path / "profile"))
    assert dom.text_by_id["verdict"].strip() == "PASS"
    assert len(dom.find("rect", "bar")) == len(there["steps"]) + len(back["steps"])

    history = world.coordination.history(SHOP)
    assert [(h.run_id, h.drill, h.outcome) for h in history] == [
        (back["runId"], True, "SUCCESS"),
        (there["runId"], True, "SUCCESS"),
    ]
    for record, run in zip(history, (back, there), strict=True):  # written by the last step, as it ran
        assert [e.key for e in record.timeline] == [s["key"] for s in run["steps"]][: len(record.timeline)]
        assert len(record.timeline) >= len(run["steps"]) - 1, [e.key for e in record.timeline]
    assert world.coordination.active_cluster(SHOP) == "site-a"
    listed = json.loads(cli(world, "history", "shop/shop", "-o", "json").output)
    assert [r["drill"] for r in listed] == [True, True] and listed[0]["timeline"][0]["key"] == "validate"
    assert "CONSISTENCY (drill)" in cli(world, "history", "shop/shop").output

    # The forecast counts both runs: in the plan, in the group's status and in the gauge.
    manifest = tmp_path / "failover.yaml"
    manifest.write_text(yaml.safe_dump(failover_manifest()))
    planned = cli(world, "plan", "-f", str(manifest), "--context", "site-a")
    assert "Predicted RTO" in planned.output and "CONSISTENCY: p50 " in planned.output, planned.output
    assert "over 2 runs; objective 2m met at p95" in planned.output and "UPTIME: no history" in planned.output
    writer = GroupStatusWriter(
        world.orchestrator, world.watcher.clusters, operator_id=OPERATOR, log_once=lambda *_: None
    )
    assert writer.sync("site-b", time.time()) == 1
    assert writer.sync("site-b", time.time()) == 0  # the same forecast again: nothing to write
    status = world.fleet["site-b"].store.get("FailoverGroup", "shop", "shop")["status"]
    consistency = status["forecast"]["modes"][0]
    assert consistency["mode"] == "CONSISTENCY" and consistency["runs"] == 2 and consistency["meetsObjective"]
    slowest = max(h.finished_at - h.started_at for h in history)  # nearest rank of 2 values: the larger
    assert consistency["totalSeconds"]["p95"] == round(slowest, 3)
    labels = {"group": "shop/shop", "mode": "CONSISTENCY", "quantile": "0.95"}
    assert (
        REGISTRY.get_sample_value("failover_predicted_rto_seconds", labels)
        == consistency["totalSeconds"]["p95"]
    )


@pytest.mark.parametrize("group_spec", [{"objectives": {"rto": "1ms"}}])
def test_a_drill_that_misses_its_objective_exits_1_with_the_report(world: World, tmp_path: Path) -> None:
    result = drill(world, tmp_path / "out")
    assert result.exit_code == 1, result.output + world.worker_log()
    assert "exceeds the objective 0.001s" in result.output and "drill verdict: FAIL" in result.output
    report, page = reports(tmp_path / "out")
    [run] = report["runs"]
    assert run["outcome"] == "SUCCESS" and run["verdict"] == "FAIL"
    assert page.exists() and world.coordination.active_cluster(SHOP) == "site-b"

    from_redis = cli(world, "report", run["runId"], "--format", "json", "--context", "site-a")
    assert from_redis.exit_code == 0, from_redis.output
    assert json.loads(from_redis.output)["runs"][0]["origin"] == "run"
    world.orchestrator.store.forget(run["runId"])
    gone = cli(world, "report", run["runId"], "--context", "site-a")
    assert gone.exit_code == 2 and "give --group NAMESPACE/NAME" in gone.output
    html = tmp_path / "again.html"
    from_history = cli(
        world, "report", run["runId"], "-g", "shop/shop", "--context", "site-a", "-o", str(html)
    )
    assert from_history.exit_code == 0, from_history.output
    assert "history (DynamoDB)" in html.read_text() and 'data-verdict="FAIL"' in html.read_text()


def _refused(world: World, tmp_path: Path, expected: str) -> None:
    result = drill(world, tmp_path / "out")
    assert result.exit_code == 1 and "drill refused: " in result.output, result.output
    assert expected in result.output, result.output
    assert not world.orchestrator.runs() and not world.coordination.history(SHOP)
    assert not (tmp_path / "out").exists()


def test_a_suspended_diverged_or_unhealthy_group_is_refused(world: World, tmp_path: Path) -> None:
    stores = [world.fleet[c].store for c in ("site-a", "site-b")]
    for store in stores:
        group = store.get("FailoverGroup", "shop", "shop")
        store.put({**group, "spec": {**group["spec"], "suspended": True, "suspensionReason": "maintenance"}})
    _refused(world, tmp_path, "group shop/shop is suspended (maintenance)")
    for store in stores:
        group = store.get("FailoverGroup", "shop", "shop")
        store.put({**group, "spec": {**group["spec"], "suspended": False}})

    world.coordination.mark_diverged(SHOP, Divergence(reason="a test says so", at=time.time()))
    _refused(world, tmp_path, "is diverged (a test says so)")


def test_an_unhealthy_target_or_source_is_refused(world: World, tmp_path: Path) -> None:
    world.fleet["site-b"].store.delete("Deployment", "shop", "web")
    _refused(world, tmp_path, "group is ERROR on site-b (standby)")
    world.fleet["site-a"].store.delete("Deployment", "shop", "web")  # the active cluster is judged first
    _refused(world, tmp_path, "group is ERROR on site-a (primary)")


def test_the_failback_is_refused_when_the_group_was_suspended_meanwhile(world: World, tmp_path: Path) -> None:
    """The checks of a drill hold for its failback too: a group suspended while the first run moved it
    is not moved back; the drill fails (exit 1) with its report, and says the group stays on site-b."""
    import threading

    stores = [world.fleet[c].store for c in ("site-a", "site-b")]
    done = threading.Event()

    def suspend_once_running() -> None:
        while not done.is_set():
            if any(not run.terminal and run.token is not None for run in world.orchestrator.runs()):
                for store in stores:
                    group = store.get("FailoverGroup", "shop", "shop")
                    spec = {**group["spec"], "suspended": True, "suspensionReason": "freeze"}
                    store.put({**group, "spec": spec})
                return
            time.sleep(0.05)

    thread = threading.Thread(target=suspend_once_running, daemon=True)
    thread.start()
    try:
        result = drill(world, tmp_path / "out", "--back")
    finally:
        done.set()
        thread.join(5)
    assert result.exit_code == 1, result.output + world.worker_log()
    assert "no failback: refused: group shop/shop is suspended (freeze)" in result.output, result.output
    assert "drill verdict: FAIL" in result.output
    report, _ = reports(tmp_path / "out")
    [there] = report["runs"]
    assert there["outcome"] == "SUCCESS" and there["targetCluster"] == "site-b"
    assert world.coordination.active_cluster(SHOP) == "site-b"
    assert [h.outcome for h in world.coordination.history(SHOP)] == ["SUCCESS"]
