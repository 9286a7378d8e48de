"""The real stack on a bad day: real Celery worker processes on real Redis, moto DynamoDB through the
production :class:`~workers.dynamo.DynamoCoordination`, and two sandbox clusters holding the sample
group "shop", whose API servers answer with 5xx/429, time out or reset connections at set rates.

:func:`chaos_stack` builds one such stack (a fleet, a table, a worker); scenarios run failovers
back and forth on it and count what the workers logged (retries per request, temporary step failures).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.models import FailoverGroup
from fsm.plan import Timing
from fsm.run import Run, new_run
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV, SerializedMotoServer, dynamodb_client, endpoint_of
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.redis_server import delete_prefixed
from sandbox.stack import FAST_TIMING, sandbox_signer, stack_settings, worker_env
from tests.factories import failover, group
from tests.waiting import wait_for_run
from workers.app import create_app
from workers.container import Adapters
from workers.dynamo import DynamoCoordination
from workers.engine import Engine
from workers.kube import KubeClients, KubeEffects
from workers.settings import Settings
from workers.store import RunStore
from workers.tasks import CelerySender

# Controllers that finish quickly but still pass through every intermediate status.
CONTROLLERS: dict[str, Any] = {
    "tick": 0.02,
    "workload_delay": 0.05,
    "replica_step": 0.02,
    "volume_delay": 0.05,
    "volume_resync_delay": 0.1,
    "flux_delay": 0.05,
    "job_duration": 0.3,
}
SITES = ("site-a", "site-b")


@dataclass
class ChaosStack:
    fleet: SandboxFleet
    env: dict[str, str]
    settings: Settings
    engine: Engine
    store: RunStore
    coordination: DynamoCoordination
    group: FailoverGroup
    tmp_path: Path
    name: str
    workers: list[WorkerProcess] = field(default_factory=list)
    runs: int = 0

    def start_worker(self, concurrency: int = 1) -> WorkerProcess:
        worker = WorkerProcess(
            self.env,
            name=f"{self.name}-w{len(self.workers) + 1}",
            queues=self.settings.queue,
            log_path=self.tmp_path / f"{self.name}-w{len(self.workers) + 1}.log",
            concurrency=concurrency,
        )
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def owner(self) -> str:
        owner = self.coordination.active_cluster(self.group.key)
        assert owner is not None
        return owner

    def submit(self, mode: str) -> str:
        """A failover of "shop" from the cluster that owns it now to the other one."""
        source = self.owner()
        target = next(site for site in SITES if site != source)
        self.runs += 1
        run_id = f"{self.name}-{self.runs}-{uuid.uuid4().hex[:6]}"
        run = new_run(
            run_id=run_id,
            failover=failover(mode=mode, target=target),
            group=self.group,
            source_cluster=source,
            now=time.time(),
            timing=self.settings.timing,
        )
        assert self.engine.submit(run)
        return run_id

    def wait_for(self, run_id: str, done: Callable[[Run], bool], timeout: float = 120.0) -> Run:
        return wait_for_run(
            self.store, run_id, done, timeout=timeout, logs=[w.log_path for w in self.workers]
        )

    def wait_finished(self, run_id: str, timeout: float = 120.0) -> Run:
        return self.wait_for(run_id, lambda r: r.terminal, timeout)

    def logged(self, event: str) -> int:
        """How many times the workers logged ``event`` (e.g. ``kube.request_retry``)."""
        pattern = re.compile(rf"\b{re.escape(event)}\b")
        return sum(len(pattern.findall(w.log_path.read_text(errors="replace"))) for w in self.workers)

    def set_faults(self, **knobs: Any) -> None:
        """The same fault knobs on both clusters, each with its own seed."""
        for index, cluster in enumerate(self.fleet):
            for name, value in knobs.items():
                setattr(cluster.faults, name, value)
            cluster.faults.reseed(1000 + index)

    def injected(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for cluster in self.fleet:
            for fault, count in cluster.faults.injected.items():
                total[fault] = total.get(fault, 0) + count
        return dict(sorted(total.items()))


@contextmanager
def chaos_stack(
    name: str,
    *,
    redis_url: str,
    real_redis: redis.Redis,
    tmp_path: Path,
    dynamodb_endpoint: str,
    timing: Timing = FAST_TIMING,
    controllers: dict[str, Any] | None = None,
    direct_endpoint: str | None = None,
    **settings_overrides: Any,
) -> Iterator[ChaosStack]:
    """One stack: a fleet of site-a (active) and site-b, a fresh table behind ``dynamodb_endpoint``
    (the workers'; the test process talks to ``direct_endpoint`` if given), no worker yet."""
    prefix = f"chaos-{name}-{uuid.uuid4().hex[:8]}:"
    table = f"failover-{name}-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / name
    directory.mkdir()
    with SandboxFleet(
        list(SITES), kubeconfig_path=directory / "kubeconfig", **(controllers or CONTROLLERS)
    ) as fleet:
        load_sample_fleet(fleet, active="site-a")
        overrides: dict[str, Any] = {
            "kubeconfig": str(fleet.kubeconfig_path),
            "dynamodb_table": table,
            "dynamodb_endpoint_url": dynamodb_endpoint,
            "adapters": "tests.chaos_faults.adapters:kube_with_dynamodb",
            "clusters": list(SITES),
            "kube_connect_timeout": 1.0,
            "kube_read_timeout": 5.0,
            **settings_overrides,
        }
        settings = stack_settings(redis_url, prefix, timing=timing, **overrides)
        env = worker_env(settings, **AWS_DUMMY_ENV)
        app = create_app(settings)
        client = dynamodb_client(direct_endpoint or dynamodb_endpoint)
        coordination = DynamoCoordination(table, client=client)
        coordination.ensure_table()
        g = group()
        coordination.set_initial_owner(g.key, "site-a")
        clients = KubeClients(fleet.kubeconfig_path)
        store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
        engine = Engine(
            store, Adapters(KubeEffects(clients), coordination), CelerySender(app, settings), settings
        )
        built = ChaosStack(fleet, env, settings, engine, store, coordination, g, directory, name)
        try:
            yield built
        finally:
            for worker in built.workers:
                worker.stop()
            clients.close()
            client.close()
            app.close()
            delete_prefixed(real_redis, prefix)


@pytest.fixture
def make_stack(
    redis_server_url: str, real_redis: redis.Redis, tmp_path: Path, moto: SerializedMotoServer
) -> Callable[..., Any]:
    """``with make_stack("name", **settings) as stack:`` on the session's moto server."""

    def make(name: str, **options: Any) -> Any:
        return chaos_stack(
            name,
            redis_url=redis_server_url,
            real_redis=real_redis,
            tmp_path=tmp_path,
            dynamodb_endpoint=endpoint_of(moto),
            **options,
        )

    return make
