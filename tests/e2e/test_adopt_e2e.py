"""Bring your own application: a user's own FailoverGroup ("payments", its own namespace and
operatorID, a Deployment, a StatefulSet with its VolumeReplication and an Ingress on both clusters,
active on site-a, nothing in DynamoDB) is adopted, then failed over with ``failoverctl submit`` and
ends SUCCESS. Adopted by ``failoverctl group adopt``, by the watcher on its own, and with ``--active``
on a group active on both sites (a RESOLVE run makes the other site passive first).

Two sandbox clusters, a moto DynamoDB, the real Redis, a real Celery worker process with the
production adapters, the watcher in-process; ``failoverctl`` runs as a separate process with the
operator's identity."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from producers.kube import connect
from producers.watcher import FailoverWatcher
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV, dynamodb_client
from sandbox.kube import SandboxFleet
from sandbox.stack import stack_settings, worker_env
from tests import payments
from tests.autofailover.conftest import CONTROLLERS, TIMING
from tests.payments import PAYMENTS
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLUSTERS = ["site-a", "site-b"]


@dataclass
class Site:
    fleet: SandboxFleet
    coordination: DynamoCoordination
    env: dict[str, str]
    worker: WorkerProcess
    make_watcher: Callable[..., FailoverWatcher]
    tmp_path: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            **self.env,
            "FAILOVER_KUBECONFIG": str(self.fleet.kubeconfig_for("operator")),
            "FAILOVER_LOG_LEVEL": "WARNING",
        }
        return subprocess.run(
            [sys.executable, "-c", "from producers.cli import main; main()", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def submit(self, target: str, name: str) -> dict[str, Any]:
        """``failoverctl submit`` of a CONSISTENCY Failover to ``target``; returns its final status."""
        manifest = self.tmp_path / f"{name}.yaml"
        spec = {
            "targetCluster": target,
            "failoverMode": "CONSISTENCY",
            "failoverGroups": [{"name": "payments"}],
        }
        body = {
            "apiVersion": "crd.hahomelabs.com/v1alpha1",
            "kind": "Failover",
            "metadata": {"name": name, "namespace": "payments"},
            "spec": spec,
        }
        manifest.write_text(yaml.safe_dump(body))
        result = self.cli("submit", "-f", str(manifest), "--context", "site-a")
        assert result.returncode == 0, result.stdout + result.stderr
        return self.wait(lambda: self._finished(name), f"Failover {name} finished")

    def _finished(self, name: str) -> dict[str, Any] | None:
        obj = self.fleet["site-a"].store.find("Failover", "payments", name)
        status = (obj or {}).get("status") or {}
        return status if status.get("status") in ("SUCCESS", "FAILED") else None

    def wait(self, found: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout}s\n{self.worker.log_path.read_text()[-4000:]}")

    def serving(self) -> list[str]:
        """The clusters where the payments api Deployment has ready replicas."""
        ready = []
        for cluster in self.fleet:
            api = cluster.store.get("Deployment", "payments", "api")
            if (api.get("status") or {}).get("readyReplicas"):
                ready.append(cluster.name)
        return ready


@pytest.fixture
def site(
    *, redis_server_url: str, real_redis: redis.Redis, prefix: str, tmp_path: Path, dynamodb_endpoint: str
) -> Iterator[Site]:
    table = f"adopt-{uuid.uuid4().hex[:10]}"
    with SandboxFleet(CLUSTERS, kubeconfig_path=tmp_path / "kubeconfig", **CONTROLLERS) as fleet:
        client = dynamodb_client(dynamodb_endpoint)
        coordination = DynamoCoordination(table, client=client)
        coordination.ensure_table()
        settings = stack_settings(
            redis_server_url,
            prefix,
            timing=TIMING,
            visibility_timeout=30,
            kubeconfig=str(fleet.kubeconfig_path),
            clusters=CLUSTERS,
            operator_id=payments.OPERATOR,
            dynamodb_table=table,
            dynamodb_endpoint_url=dynamodb_endpoint,
        )
        env = worker_env(settings, FAILOVER_ADAPTERS="workers.container:production_adapters", **AWS_DUMMY_ENV)
        orchestrator = Orchestrator(settings, coordination=coordination)
        watcher_clients = connect(fleet.kubeconfig_for("watcher"), request_timeout=2.0)
        worker = WorkerProcess(env, name="adopt", queues=settings.queue, log_path=tmp_path / "worker.log")
        watchers: list[FailoverWatcher] = []

        def make_watcher(**options: Any) -> FailoverWatcher:
            values = {"watch_timeout": 1, "backoff_initial": 0.05, "backoff_max": 0.4, **options}
            made = FailoverWatcher(orchestrator, watcher_clients, operator_id=payments.OPERATOR, **values)
            watchers.append(made)
            return made.start()

        try:
            worker.wait_ready()
            yield Site(fleet, coordination, env, worker, make_watcher, tmp_path)
        finally:
            for made in watchers:
                made.stop()
            worker.stop()
            for opened in watcher_clients.values():
                opened.close()
            orchestrator.close()
            client.close()


def _assert_moved_to_site_b(site: Site, status: dict[str, Any]) -> None:
    assert status["status"] == "SUCCESS", status
    assert site.coordination.active_cluster(PAYMENTS) == "site-b"
    assert site.serving() == ["site-b"]
    outcomes = [h.outcome for h in site.coordination.history(PAYMENTS)]
    assert outcomes[0] == "SUCCESS" and outcomes[-1] == "ADOPTED", outcomes


def test_adopted_by_the_cli_then_failed_over(site: Site) -> None:
    payments.load_fleet(site.fleet, active="site-a")
    adopted = site.cli("group", "adopt", "payments/payments", "--reason", "bring payments")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert "adopted: site-a recorded as its active cluster" in adopted.stdout
    site.make_watcher()
    [record] = site.coordination.history(PAYMENTS)
    assert record.outcome == "ADOPTED" and record.reason == "bring payments"
    _assert_moved_to_site_b(site, site.submit("site-b", "move-payments"))


def test_adopted_by_the_watcher_then_failed_over(site: Site) -> None:
    payments.load_fleet(site.fleet, active="site-a")
    site.make_watcher(group_status_interval=0.2)
    site.wait(lambda: site.coordination.active_cluster(PAYMENTS), "the watcher's adoption")
    [record] = site.coordination.history(PAYMENTS)
    assert (record.outcome, record.target_cluster, record.actor) == ("ADOPTED", "site-a", "watcher")
    _assert_moved_to_site_b(site, site.submit("site-b", "move-payments"))


def test_active_on_both_sites_adopted_with_active_then_failed_over(site: Site) -> None:
    payments.load_fleet(site.fleet, active="site-a")
    payments.load(site.fleet["site-b"], active=True)  # both serve: ambiguous
    site.make_watcher(group_status_interval=0.2)
    refused = site.cli("group", "adopt", "payments/payments")
    assert refused.returncode == 1 and "site-a, site-b are all active" in refused.stderr, refused.stderr
    assert site.coordination.active_cluster(PAYMENTS) is None  # nor did the watcher adopt it
    adopted = site.cli("group", "adopt", "payments/payments", "--active", "site-a", "--yes")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr + site.worker.log_path.read_text()[-4000:]
    assert "settled: site-a is the active cluster, site-b passive" in adopted.stdout
    assert site.serving() == ["site-a"]
    assert [h.outcome for h in site.coordination.history(PAYMENTS)] == ["RESOLVED", "ADOPTED"]
    _assert_moved_to_site_b(site, site.submit("site-b", "move-payments"))
