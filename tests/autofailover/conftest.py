"""The whole automatic failover loop on local stand-ins: two sandbox clusters with the sample group
(site-a active, short timeouts), a moto DynamoDB, the real Redis, a real Celery worker with the
production adapters (as ``sandbox.demo`` wires it), and the watcher and the health checker running
in-process. Everything started here is stopped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.models import FailoverGroup, GroupKey
from fsm.plan import Timing
from producers.health import HealthChecker
from producers.kube import ClusterClient, connect
from producers.waker import WaitWaker
from producers.watcher import FailoverWatcher
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV, dynamodb_client
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.stack import stack_settings, worker_env
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination

OPERATOR = "failover-orchestrator"  # the operatorID the sample group carries
SHOP = GroupKey(operator_id=OPERATOR, namespace="shop", name="shop")
CLUSTERS = ["site-a", "site-b"]
TIMING = Timing(
    poll_initial=0.1,
    poll_factor=1.5,
    poll_max=0.3,
    retry_initial=0.1,
    retry_max=0.5,
    effect_timeout=20,
    wait_timeout=20,
    coordination_timeout=20,
)
CONTROLLERS: dict[str, Any] = {
    "tick": 0.02,
    "workload_delay": 0.1,
    "replica_step": 0.05,
    "volume_delay": 0.1,
    "volume_resync_delay": 0.2,
    "flux_delay": 0.1,
    "job_duration": 0.3,
}
# Short enough for a test: a site is called down after 3 s without a heartbeat.
SHORT_TIMEOUTS = {"transitoryState": "2m", "unhealthyPrimary": "3s", "heartbeat": "3s"}
HEARTBEAT_INTERVAL = "500ms"


@dataclass
class World:
    fleet: SandboxFleet
    orchestrator: Orchestrator
    coordination: DynamoCoordination
    clients: dict[str, ClusterClient]
    checker: HealthChecker
    watcher: FailoverWatcher
    worker: WorkerProcess
    waker: WaitWaker
    tmp_path: Path
    started: list[Callable[[], None]] = field(default_factory=list)

    def group(self) -> FailoverGroup:
        return FailoverGroup.model_validate(self.fleet["site-b"].store.get("FailoverGroup", "shop", "shop"))

    def worker_log(self) -> str:
        return self.worker.log_path.read_text()[-6000:]


def shorten_timeouts(fleet: SandboxFleet, **spec: Any) -> None:
    """Patch the sample FailoverGroup on every cluster (short timeouts, plus ``spec``)."""
    for cluster in fleet:
        group = cluster.store.get("FailoverGroup", "shop", "shop")
        group["spec"]["timeouts"] = {**group["spec"].get("timeouts", {}), **SHORT_TIMEOUTS}
        group["spec"]["heartbeatInterval"] = HEARTBEAT_INTERVAL
        group["spec"].update(spec)
        cluster.store.put(group)


@pytest.fixture
def group_spec() -> dict[str, Any]:
    """Extra spec fields of the sample group; a test overrides this fixture (e.g. ``suspended``)."""
    return {}


@pytest.fixture
def timing() -> Timing:
    """The runs' timing; a test module overrides this fixture (e.g. a long polling countdown)."""
    return TIMING


@pytest.fixture
def controllers() -> dict[str, Any]:
    """The sandbox controllers' knobs; a test module overrides this fixture (e.g. realistic delays)."""
    return CONTROLLERS


@pytest.fixture
def world(
    *,
    timing: Timing,
    controllers: dict[str, Any],
    redis_server_url: str,
    real_redis: redis.Redis,
    prefix: str,
    tmp_path: Path,
    dynamodb_endpoint: str,
    group_spec: dict[str, Any],
) -> Iterator[World]:
    table = f"autofailover-{uuid.uuid4().hex[:10]}"
    started: list[Callable[[], None]] = []
    with SandboxFleet(CLUSTERS, kubeconfig_path=tmp_path / "kubeconfig", **controllers) as fleet:
        load_sample_fleet(fleet, active="site-a")
        shorten_timeouts(fleet, **group_spec)
        client = dynamodb_client(dynamodb_endpoint)
        coordination = DynamoCoordination(table, client=client)
        coordination.ensure_table()
        coordination.set_initial_owner(SHOP, "site-a")
        settings = stack_settings(
            redis_server_url,
            prefix,
            timing=timing,
            visibility_timeout=max(30, 4 * max(timing.poll_max, timing.retry_max)),
            kubeconfig=str(fleet.kubeconfig_path),
            clusters=CLUSTERS,
            operator_id=OPERATOR,
            failover_cluster="site-b",
            dynamodb_table=table,
            dynamodb_endpoint_url=dynamodb_endpoint,
        )
        env = worker_env(settings, FAILOVER_ADAPTERS="workers.container:production_adapters", **AWS_DUMMY_ENV)
        orchestrator = Orchestrator(settings, coordination=coordination)
        # Each producer acts as its own ServiceAccount (deploy/rbac), as in the shipped manifests.
        clients = connect(fleet.kubeconfig_for("health-checker"), request_timeout=2.0)
        watcher_clients = connect(fleet.kubeconfig_for("watcher"), request_timeout=2.0)
        worker = WorkerProcess(env, name="auto", queues=settings.queue, log_path=tmp_path / "worker.log")
        checker = HealthChecker(
            orchestrator, clients, operator_id=OPERATOR, cooldown=600.0, min_sleep=0.1, max_sleep=0.5
        )
        watcher = FailoverWatcher(
            orchestrator,
            watcher_clients,
            operator_id=OPERATOR,
            watch_timeout=1,
            backoff_initial=0.05,
            backoff_max=0.4,
            group_status_interval=3600.0,
        )
        try:
            worker.wait_ready()
            # The watcher process's waker, as its ServiceAccount: running from the start, as deployed.
            waker = WaitWaker(
                orchestrator.wakes(),
                CLUSTERS,
                lambda name: ClusterClient.from_kubeconfig(
                    fleet.kubeconfig_for("watcher"), name, request_timeout=2.0
                ),
                watch_timeout=5,
                backoff_initial=0.05,
                backoff_max=0.4,
            ).start()
            started.append(waker.stop)
            yield World(fleet, orchestrator, coordination, clients, checker, watcher, worker, waker, tmp_path)
        finally:
            for stop in started:
                stop()
            checker.stop()
            watcher.stop()
            worker.stop()
            for opened in [*clients.values(), *watcher_clients.values()]:
                opened.close()
            orchestrator.close()
            client.close()
