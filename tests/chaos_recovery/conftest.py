"""A real stack for recovery scenarios: real Celery worker processes with the production recovery
settings (heartbeats every 1 s, dead after 3 s, schedule-to-start 2 s, redrive_after 45 s, the broker's
visibility timeout 3600 s), a real Redis under this test's prefix (or a Redis server of the test's own,
to restart), the production DynamoCoordination on moto, and fake clusters kept in another Redis
prefix so that a lost orchestrator Redis does not lose the clusters."""

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
from sandbox.dynamo import AWS_DUMMY_ENV, SerializedMotoServer, dynamodb_client, endpoint_of
from sandbox.fakes import FakeClusters
from sandbox.redis_server import OwnRedis, delete_prefixed
from sandbox.stack import FAST_TIMING, sandbox_signer, stack_settings, worker_env
from tests.factories import all_refs, failover, group
from tests.waiting import wait_for_run
from workers.app import create_app
from workers.container import Adapters
from workers.dynamo import DynamoCoordination
from workers.engine import Engine
from workers.messages import CelerySender
from workers.ports import Role
from workers.settings import Settings
from workers.store import RunStore


@dataclass
class ChaosStack:
    env: dict[str, str]
    settings: Settings
    engine: Engine
    store: RunStore
    client: redis.Redis
    clusters: FakeClusters
    coordination: DynamoCoordination
    tmp_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    started: int = 0

    def start_worker(self, name: str | None = None, *, wait: bool = True, **env: str) -> WorkerProcess:
        self.started += 1
        name = name or f"w{self.started}"
        worker = WorkerProcess(
            {**self.env, **env}, name=name, queues=self.settings.queue, log_path=self.tmp_path / f"{name}.log"
        )
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.process.poll() is None]

    def submit(self, mode: str = "CONSISTENCY", run_id: str | None = None, target: str = "site-b") -> str:
        run_id = run_id or f"run-{uuid.uuid4().hex[:8]}"
        run = new_run(
            run_id=run_id,
            failover=failover(mode=mode, target=target),
            group=group(),
            source_cluster=self.coordination.active_cluster(group().key) or "site-a",
            now=time.time(),
            timing=FAST_TIMING,
            nonce=uuid.uuid4().hex[:12],
        )
        assert self.engine.submit(run)
        return run_id

    def wait_for(self, run_id: str, done: Callable[[Run], bool], timeout: float = 60.0) -> Run:
        return wait_for_run(
            self.store, run_id, done, timeout=timeout, logs=[w.log_path for w in self.workers]
        )

    def wait_finished(self, run_id: str, timeout: float = 60.0) -> Run:
        return self.wait_for(run_id, lambda r: r.terminal, timeout)

    def lose_redis(self) -> int:
        """Delete every key of the orchestrator's prefix (run store, broker, claims, heartbeats)."""
        keys = list(self.client.scan_iter(match=f"{self.settings.key_prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)
        return len(keys)

    def worker_of(self, worker_id: str) -> WorkerProcess | None:
        """The worker process whose main process's pid is in ``worker_id`` (host:pid:nonce)."""
        pid = int(worker_id.split(":")[-2])
        return next((w for w in self.workers if w.process.pid == pid), None)


def _chaos_stack(
    store_url: str, fake_url: str, prefix: str, tmp_path: Path, moto: SerializedMotoServer, **env: str
) -> Iterator[ChaosStack]:
    endpoint, table = endpoint_of(moto), f"failover-{uuid.uuid4().hex[:10]}"
    settings = stack_settings(
        store_url,
        f"{prefix}s:",
        timing=FAST_TIMING,
        visibility_timeout=3600.0,  # production: the broker never restores within a test
        broker_transport_extra={},
        redrive_after=45.0,  # production
        holder=f"site-{prefix}",
        dynamodb_table=table,
        dynamodb_endpoint_url=endpoint,
    )
    assert (settings.heartbeat_interval, settings.heartbeat_timeout, settings.schedule_to_start) == (
        1.0,
        3.0,
        2.0,
    )
    full_env = worker_env(
        settings,
        FAILOVER_ADAPTERS="tests.chaos_recovery.adapters:chaos_adapters",
        FAILOVER_FAKE_REDIS_URL=fake_url,
        FAILOVER_FAKE_PREFIX=f"{prefix}fake:",
        FAILOVER_FAKE_SETTLE_CHECKS="3",
        **AWS_DUMMY_ENV,
        **env,
    )
    fake_client = redis.Redis.from_url(fake_url)
    client = redis.Redis.from_url(store_url)
    dynamo_client = dynamodb_client(endpoint)
    coordination = DynamoCoordination(table, client=dynamo_client)
    coordination.ensure_table()
    clusters = FakeClusters(fake_client, f"{prefix}fake:")
    g = group()
    clusters.load("site-a", all_refs(g), Role.ACTIVE)
    clusters.load("site-b", all_refs(g), Role.PASSIVE)
    coordination.set_initial_owner(g.key, "site-a")
    app = create_app(settings)
    store = RunStore(client, signer=sandbox_signer(), prefix=settings.key_prefix)
    engine = Engine(store, Adapters(clusters, coordination), CelerySender(app, settings), settings)
    stack = ChaosStack(full_env, settings, engine, store, client, clusters, coordination, tmp_path)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()
        app.close()
        dynamo_client.close()
        delete_prefixed(fake_client, prefix)
        fake_client.close()
        client.close()


@pytest.fixture
def chaos(
    redis_server_url: str, real_redis: redis.Redis, prefix: str, tmp_path: Path, moto: SerializedMotoServer
) -> Iterator[ChaosStack]:
    yield from _chaos_stack(redis_server_url, redis_server_url, prefix, tmp_path, moto)


@pytest.fixture
def chaos_own_redis(  # noqa: PLR0917 (pytest fixtures are positional)
    own_redis: OwnRedis,
    redis_server_url: str,
    real_redis: redis.Redis,
    prefix: str,
    tmp_path: Path,
    moto: SerializedMotoServer,
) -> Iterator[ChaosStack]:
    """The orchestrator's Redis is a server of this test's own; the fake clusters live elsewhere."""
    yield from _chaos_stack(own_redis.url, redis_server_url, prefix, tmp_path, moto)
