"""The Failover watcher against two sandbox clusters, a moto DynamoDB and the real Redis.

No Celery worker runs: submission only creates the run in Redis and enqueues its start message, which
the tests count in the broker's list.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from fsm.models import GroupKey
from producers.kube import ClusterClient
from producers.watcher import FailoverWatcher
from sandbox.dynamo import dynamodb_client
from sandbox.kube import SandboxFleet
from tests.producers.conftest import OPERATOR, failover_manifest, wait_until
from workers.api import Orchestrator, Submission
from workers.dynamo import DynamoCoordination
from workers.ports import Heartbeat
from workers.settings import Settings

pytestmark = pytest.mark.integration

MakeWatcher = Callable[..., FailoverWatcher]


def status_of(fleet: SandboxFleet, cluster: str, name: str = "move-shop") -> dict[str, Any]:
    obj = fleet[cluster].store.find("Failover", "shop", name)
    return (obj or {}).get("status") or {}


def submitted(fleet: SandboxFleet, cluster: str, name: str = "move-shop") -> dict[str, Any]:
    return wait_until(
        lambda: (s := status_of(fleet, cluster, name)).get("status") == "IN_PROGRESS" and s,
        what=f"Failover {name} IN_PROGRESS on {cluster}",
    )


def test_a_new_failover_starts_one_run_per_group(
    fleet: SandboxFleet,
    make_watcher: MakeWatcher,
    orchestrator: Orchestrator,
    coordination: DynamoCoordination,
    enqueued: Callable[[], int],
) -> None:
    reports = copy.deepcopy(fleet["site-a"].store.get("FailoverGroup", "shop", "shop"))
    reports["metadata"] = {"name": "reports", "namespace": "shop"}
    reports["spec"] = {"operatorID": OPERATOR, "workloads": [{"kind": "CronJob", "name": "report"}]}
    for cluster in fleet:
        cluster.store.put(copy.deepcopy(reports))
    coordination.set_initial_owner(GroupKey(operator_id=OPERATOR, namespace="shop", name="reports"), "site-a")
    make_watcher().start()

    fleet["site-a"].store.put(failover_manifest(groups=[{"name": "shop"}, {"name": "reports"}]))

    status = submitted(fleet, "site-a")
    runs = orchestrator.runs(failover="shop/move-shop")
    assert sorted(str(run.group) for run in runs) == ["shop/reports", "shop/shop"]
    entries = {g["name"]: g for g in status["failoverGroups"]}
    assert {entries[run.group.name]["runId"] for run in runs} == {run.run_id for run in runs}
    assert {run.failover_cluster for run in runs} == {"site-a"}
    assert all(
        e["namespace"] == "shop" and e["status"] == "PENDING" and e["startTime"] for e in entries.values()
    )
    assert enqueued() == 2


def test_the_same_failover_on_both_clusters_starts_one_run(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator, enqueued: Callable[[], int]
) -> None:
    make_watcher().start()
    for cluster in fleet:
        cluster.store.put(failover_manifest())

    on_a, on_b = submitted(fleet, "site-a"), submitted(fleet, "site-b")

    [run] = orchestrator.runs(failover="shop/move-shop")
    assert on_a["failoverGroups"][0]["runId"] == on_b["failoverGroups"][0]["runId"] == run.run_id
    assert enqueued() == 1


def test_a_restarted_watcher_submits_nothing_again_and_rewrites_no_status(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator, enqueued: Callable[[], int]
) -> None:
    first = make_watcher().start()
    fleet["site-a"].store.put(failover_manifest())
    submitted(fleet, "site-a")
    first.stop()
    version = fleet["site-a"].store.get("Failover", "shop", "move-shop")["metadata"]["resourceVersion"]

    second = make_watcher().start()
    wait_until(lambda: all(s.lists >= 1 for s in second.stats.values()), what="both clusters listed")
    second.stop()

    assert len(orchestrator.runs(failover="shop/move-shop")) == 1
    assert enqueued() == 1
    assert (
        fleet["site-a"].store.get("Failover", "shop", "move-shop")["metadata"]["resourceVersion"] == version
    )


@pytest.mark.parametrize("fleet_options", [{"bookmark_interval": 3600.0}])
def test_a_410_relists_and_the_watch_goes_on(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator
) -> None:
    watcher = make_watcher().start()
    wait_until(lambda: watcher.stats["site-a"].lists == 1, what="first list")
    # Changes the watch does not see (another kind), then a compaction: the watcher's resourceVersion
    # is now older than the server's history, so its next watch request gets 410 Gone.
    deployment = fleet["site-a"].store.get("Deployment", "shop", "web")
    deployment["metadata"].setdefault("labels", {})["touched"] = "yes"
    fleet["site-a"].store.put(deployment)
    fleet["site-a"].store.compact()

    wait_until(lambda: watcher.stats["site-a"].relists >= 1, what="a relist after 410")
    fleet["site-a"].store.put(failover_manifest())

    submitted(fleet, "site-a")
    assert watcher.stats["site-a"].lists >= 2
    assert len(orchestrator.runs(failover="shop/move-shop")) == 1


def test_a_cluster_that_goes_down_does_not_stop_the_other_and_is_watched_again(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator
) -> None:
    watcher = make_watcher().start()
    wait_until(lambda: watcher.stats["site-b"].lists == 1, what="first list of site-b")
    with capture_logs() as logs:
        fleet["site-b"].set_down(True)
        fleet["site-b"].store.put(failover_manifest(name="while-down"))
        fleet["site-a"].store.put(failover_manifest())

        submitted(fleet, "site-a")
        wait_until(lambda: watcher.stats["site-b"].failures >= 3, what="three failed attempts on site-b")
    retries = [e for e in logs if e["event"] == "cluster_watch_failed" and e["cluster"] == "site-b"]
    assert [e["attempt"] for e in retries[:3]] == [1, 2, 3]
    assert all(0 < e["next_delay"] <= 0.4 for e in retries)
    assert not orchestrator.runs(failover="shop/while-down")

    fleet["site-b"].set_down(False)

    submitted(fleet, "site-b", "while-down")
    assert len(orchestrator.runs(failover="shop/while-down")) == 1


@pytest.mark.parametrize(
    "case",
    [
        ({"failoverMode": "FAST"}, "spec.failoverMode", "CONSISTENCY"),
        ({"targetCluster": "site-a"}, "spec.targetCluster", "already the active cluster"),
        ({"targetCluster": "site-z"}, "spec.targetCluster", "unknown cluster"),
        (
            {"failoverGroups": [{"name": "nope"}]},
            "spec.failoverGroups[0]",
            "does not exist in cluster site-a",
        ),
    ],
)
def test_an_invalid_failover_is_failed_with_a_condition_naming_the_field_and_starts_nothing(
    fleet: SandboxFleet,
    make_watcher: MakeWatcher,
    orchestrator: Orchestrator,
    enqueued: Callable[[], int],
    case: tuple[dict[str, Any], str, str],
) -> None:
    spec, field, words = case
    manifest = failover_manifest()
    manifest["spec"].update(spec)
    make_watcher().start()
    fleet["site-a"].store.put(manifest)

    status = wait_until(lambda: (s := status_of(fleet, "site-a")).get("status") == "FAILED" and s)

    [condition] = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Ready", "False", "InvalidSpec")
    assert condition["message"].startswith(f"invalid: {field}: ") and words in condition["message"]
    assert condition["observedGeneration"] == 1
    assert orchestrator.runs(failover="shop/move-shop") == []
    assert enqueued() == 0
    # ... and a Warning Event on the Failover saying the same (kubectl describe / get events show it)
    events, _ = fleet["site-a"].store.list("Event", "shop")
    [event] = [e for e in events if e["involvedObject"]["name"] == "move-shop"]
    assert (event["type"], event["reason"], event["involvedObject"]["kind"]) == (
        "Warning",
        "InvalidSpec",
        "Failover",
    )
    assert event["message"].startswith(f"invalid: {field}: ") and words in event["message"]


def test_a_dry_run_is_not_submitted(
    fleet: SandboxFleet, make_watcher: MakeWatcher, orchestrator: Orchestrator, enqueued: Callable[[], int]
) -> None:
    watcher = make_watcher()
    fleet["site-a"].store.put(failover_manifest(dryRun=True))
    obj = fleet["site-a"].store.get("Failover", "shop", "move-shop")

    assert watcher.handle("site-a", obj).action.value == "dry_run"

    status = status_of(fleet, "site-a")
    assert status["status"] == "PENDING" and "failoverctl plan" in status["message"]
    assert orchestrator.runs(failover="shop/move-shop") == [] and enqueued() == 0


def test_stop_ends_every_thread_promptly(fleet: SandboxFleet, make_watcher: MakeWatcher) -> None:
    watcher = make_watcher(watch_timeout=30)
    watcher.start()
    wait_until(lambda: all(s.lists >= 1 for s in watcher.stats.values()), what="both clusters listed")
    threads = list(watcher._threads)
    time.sleep(0.2)  # both threads are now inside a 30 s watch request

    started = time.monotonic()
    watcher.stop()

    assert time.monotonic() - started < 2.0
    assert not any(t.is_alive() for t in threads)


def test_failover_group_status_shows_global_state_and_health_and_is_written_only_on_change(
    fleet: SandboxFleet, make_watcher: MakeWatcher, coordination: DynamoCoordination
) -> None:
    now = time.time()
    key = GroupKey(operator_id=OPERATOR, namespace="shop", name="shop")
    coordination.write_heartbeat(key, Heartbeat("site-a", "OK", "PRIMARY", now - 5))
    coordination.write_heartbeat(key, Heartbeat("site-b", "OK", "STANDBY", now - 300))
    watcher = make_watcher()

    assert watcher.sync_group_statuses("site-a", now) == 1
    assert watcher.sync_group_statuses("site-b", now) == 1

    on_a = fleet["site-a"].store.get("FailoverGroup", "shop", "shop")["status"]
    assert on_a["health"] == "OK" and on_a["suspended"] is False
    state = on_a["globalState"]
    assert (state["activeCluster"], state["thisCluster"], state["dbSyncStatus"]) == (
        "site-a",
        "site-a",
        "Synced",
    )
    assert [(c["name"], c["role"], c["health"]) for c in state["clusters"]] == [
        ("site-a", "PRIMARY", "OK"),
        ("site-b", "STANDBY", "UNKNOWN"),  # its heartbeat is older than timeouts.heartbeat
    ]
    web = next(w for w in on_a["workloads"] if w["name"] == "web")
    assert (web["health"], web["status"]) == ("OK", "3/3 ready")
    on_b = fleet["site-b"].store.get("FailoverGroup", "shop", "shop")["status"]
    assert on_b["health"] == "OK" and on_b["globalState"]["thisCluster"] == "site-b"
    assert next(w for w in on_b["workloads"] if w["name"] == "web")["status"].startswith("passive")

    assert watcher.sync_group_statuses("site-a", now + 10) == 0  # nothing changed: nothing written

    deployment = fleet["site-a"].store.get("Deployment", "shop", "web")
    deployment["status"]["readyReplicas"] = 1
    fleet["site-a"].controllers.stop()  # keep the simulated controller from repairing it
    fleet["site-a"].store.put(deployment)
    assert watcher.sync_group_statuses("site-a", now + 20) == 1
    status = fleet["site-a"].store.get("FailoverGroup", "shop", "shop")["status"]
    assert status["health"] == "DEGRADED"


def test_an_object_that_keeps_failing_is_retried_then_left_alone_and_the_watch_goes_on(
    fleet: SandboxFleet,
    settings: Settings,
    coordination: DynamoCoordination,
    clients: dict[str, ClusterClient],
) -> None:
    # A bug in submission (anything but our TemporaryError) must not stall the cluster's watch.
    class BrokenSubmission(Orchestrator):
        def submit(self, *args: object, **kwargs: object) -> Submission:
            raise RuntimeError("ConnectionError: a bug in submission")

    with BrokenSubmission(settings, coordination=coordination) as handle:
        watcher = FailoverWatcher(
            handle,
            {"site-a": clients["site-a"]},
            operator_id=OPERATOR,
            watch_timeout=1,
            backoff_initial=0.02,
            backoff_max=0.05,
            group_status_interval=3600.0,
            max_object_attempts=3,
        )
        with capture_logs() as logs, watcher:
            fleet["site-a"].store.put(failover_manifest())
            wait_until(
                lambda: any(e["event"] == "failover_not_handled" for e in logs), what="the object left alone"
            )
            fleet["site-a"].store.put(failover_manifest(name="later", mode="FAST"))
            wait_until(
                lambda: status_of(fleet, "site-a", "later").get("status") == "FAILED", what="next object"
            )

    failures = [e for e in logs if e["event"] == "cluster_watch_failed"]
    assert [e["attempt"] for e in failures[:2]] == [1, 2]
    assert "failed (attempt 1 of 3)" in failures[0]["error"]
    [gave_up] = [e for e in logs if e["event"] == "failover_not_handled"]
    assert gave_up["attempt"] == "3 of 3" and "ConnectionError" in gave_up["error"]
    assert status_of(fleet, "site-a") == {}


def test_a_failing_dynamodb_shows_as_db_sync_error_and_keeps_the_last_known_state(
    fleet: SandboxFleet,
    make_watcher: MakeWatcher,
    settings: Settings,
    clients: dict[str, ClusterClient],
    dynamodb_endpoint: str,
) -> None:
    now = time.time()
    assert make_watcher().sync_group_statuses("site-a", now) == 1
    client = dynamodb_client(dynamodb_endpoint)
    missing = DynamoCoordination("no-such-table", client=client)
    try:
        with Orchestrator(settings, coordination=missing) as handle:
            watcher = FailoverWatcher(handle, clients, operator_id=OPERATOR)

            assert watcher.sync_group_statuses("site-a", now + 5) == 1
            assert watcher.sync_group_statuses("site-a", now + 10) == 0
    finally:
        client.close()

    state = fleet["site-a"].store.get("FailoverGroup", "shop", "shop")["status"]["globalState"]
    assert (state["dbSyncStatus"], state["activeCluster"]) == ("Error", "site-a")


def test_a_failover_reads_the_active_cluster_once_per_group(
    fleet: SandboxFleet,
    make_watcher: MakeWatcher,
    orchestrator: Orchestrator,
    coordination: DynamoCoordination,
    enqueued: Callable[[], int],
) -> None:
    """The watcher checks the request against the owner it reads; the run starts from that owner
    (submit does not read and check it again)."""
    fleet["site-a"].store.put(failover_manifest())
    obj = fleet["site-a"].store.get("Failover", "shop", "move-shop")
    reads = coordination.calls["GetItem"]

    decision = make_watcher().handle("site-a", obj)

    assert decision.action.value == "submit"
    assert coordination.calls["GetItem"] - reads == 1
    [run] = orchestrator.runs(failover="shop/move-shop")
    assert run.source_cluster == "site-a" and run.target_cluster == "site-b"
    assert enqueued() == 1
