"""A real stack for end-to-end runs: real Redis as broker and run store, real Celery worker
processes (``celery -A workers.tasks worker``), the port fakes sharing state through that Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from fsm.run import Run, new_run
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import (
    AWS_DUMMY_ENV,
    SerializedMotoServer,
    dynamodb_client,
    endpoint_of,
)
from sandbox.fakes import FakeClusters, FakeCoordination
from sandbox.stack import FAST_TIMING, sandbox_signer, stack_settings, worker_env
from tests.factories import all_refs, failover, group
from tests.waiting import wait_for_run
from workers.app import create_app
from workers.container import Adapters
from workers.dynamo import DynamoCoordination
from workers.engine import Engine
from workers.ports import Coordination, Role
from workers.settings import Settings
from workers.store import RunStore
from workers.tasks import CelerySender

TIMING = FAST_TIMING


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    engine: Engine
    store: RunStore
    clusters: FakeClusters
    coordination: Coordination
    tmp_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, name: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            {**self.env, **env}, name=name, queues=self.settings.queue, log_path=self.tmp_path / f"{name}.log"
        )
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def submit(self, mode: str = "CONSISTENCY", run_id: str = "run-1") -> str:
        run = new_run(
            run_id=run_id,
            failover=failover(mode=mode),
            group=group(),
            source_cluster="site-a",
            now=time.time(),
            timing=TIMING,
        )
        assert self.engine.submit(run)
        return run_id

    def wait_for(self, run_id: str, done: Callable[[Run], bool], timeout: float = 60.0) -> Run:
        return wait_for_run(
            self.store, run_id, done, timeout=timeout, logs=[w.log_path for w in self.workers]
        )

    def wait_finished(self, run_id: str, timeout: float = 60.0) -> Run:
        return self.wait_for(run_id, lambda r: r.terminal, timeout)


def _stack(
    redis_server_url: str,
    real_redis: redis.Redis,
    prefix: str,
    tmp_path: Path,
    dynamodb: tuple[str, str] | None,
) -> Iterator[Stack]:
    settings = stack_settings(redis_server_url, prefix, timing=TIMING)
    env = worker_env(
        settings,
        FAILOVER_ADAPTERS="sandbox.fakes:adapters_from_env",
        FAILOVER_FAKE_PREFIX=f"{prefix}fake:",
        FAILOVER_FAKE_SETTLE_CHECKS="3",
    )
    app = create_app(settings)
    clusters = FakeClusters(real_redis, f"{prefix}fake:")
    closers: list[Callable[[], None]] = [app.close]
    coordination: Coordination
    if dynamodb is None:
        coordination = FakeCoordination(real_redis, f"{prefix}fake:")
    else:
        endpoint, table = dynamodb
        env.update(
            {
                "FAILOVER_ADAPTERS": "sandbox.fakes:fake_clusters_with_dynamodb",
                "FAILOVER_DYNAMODB_TABLE": table,
                "FAILOVER_DYNAMODB_ENDPOINT_URL": endpoint,
                **AWS_DUMMY_ENV,
            }
        )
        client = dynamodb_client(endpoint)
        closers.append(client.close)
        dynamo = DynamoCoordination(table, client=client)
        dynamo.ensure_table()
        coordination = dynamo
    g = group()
    clusters.load("site-a", all_refs(g), Role.ACTIVE)
    clusters.load("site-b", all_refs(g), Role.PASSIVE)
    coordination.set_initial_owner(g.key, "site-a")
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
    engine = Engine(store, Adapters(clusters, coordination), CelerySender(app, settings), settings)
    built = Stack(env, settings, engine, store, clusters, coordination, tmp_path)
    try:
        yield built
    finally:
        for worker in built.workers:
            worker.stop()
        for close in closers:
            close()


@pytest.fixture
def stack(redis_server_url: str, real_redis: redis.Redis, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(redis_server_url, real_redis, prefix, tmp_path, None)


@pytest.fixture
def dynamo_stack(
    redis_server_url: str, real_redis: redis.Redis, prefix: str, tmp_path: Path, moto: SerializedMotoServer
) -> Iterator[Stack]:
    table = f"failover-{uuid.uuid4().hex[:10]}"
    yield from _stack(redis_server_url, real_redis, prefix, tmp_path, (endpoint_of(moto), table))
