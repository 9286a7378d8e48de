"""The chaos stack: the real thing on local stand-ins, with the faults the scenarios inject.

N sandbox clusters (``sandbox.kube``) with the sample group "shop" (site-a active), the session's
Redis under a per-test prefix, a DynamoDB table of its own on the session's moto server through the
real :class:`workers.dynamo.DynamoCoordination`, and real Celery worker processes running the
production adapters (``workers.container:production_adapters``), with FAST timing and a lease of a few
seconds. Every test gets a :class:`tests.chaos.monitor.FleetMonitor` already sampling all clusters.
Everything started here is stopped afterwards; only this test's Redis keys are removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.models import FailoverGroup, GroupKey
from fsm.plan import Timing
from fsm.run import Run, new_run
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV, dynamodb_client
from sandbox.kube import SandboxCluster, SandboxFleet, load_sample_fleet
from sandbox.stack import sandbox_signer, stack_settings, worker_env
from tests.chaos.monitor import FleetMonitor
from tests.factories import failover
from tests.waiting import wait_for_run
from workers.app import create_app
from workers.container import Adapters
from workers.dynamo import DynamoCoordination
from workers.engine import Engine
from workers.kube import KubeClients, KubeEffects
from workers.ports import HistoryRecord
from workers.settings import Settings
from workers.store import RunStore
from workers.tasks import CelerySender

OPERATOR = "failover-orchestrator"  # the operatorID of the sample group
SHOP = GroupKey(operator_id=OPERATOR, namespace="shop", name="shop")
TIMING = Timing(
    poll_initial=0.05,
    poll_factor=1.5,
    poll_max=0.2,
    retry_initial=0.05,
    retry_max=0.3,
    max_attempts=4,
    effect_timeout=30,
    wait_timeout=30,
    coordination_timeout=30,
)
LEASE_SECONDS = 4.0
LEASE_MARGIN = 1.0
CONTROLLERS: dict[str, Any] = {
    "tick": 0.02,
    "workload_delay": 0.05,
    "replica_step": 0.02,
    "volume_delay": 0.05,
    "volume_resync_delay": 0.1,
    "flux_delay": 0.05,
    "job_duration": 0.3,
}
# The health checker's view of time: a site is unhealthy for long enough after 3 s.
SHORT_TIMEOUTS = {"transitoryState": "5m", "unhealthyPrimary": "3s", "heartbeat": "3s"}
FENCED = "fenced:"


@dataclass
class ChaosStack:
    fleet: SandboxFleet
    settings: Settings
    env: dict[str, str]
    coordination: DynamoCoordination
    store: RunStore
    engine: Engine
    monitor: FleetMonitor
    tmp_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    gates: list[RequestGate] = field(default_factory=list)

    @property
    def group(self) -> FailoverGroup:
        return FailoverGroup.model_validate(self.fleet["site-a"].store.get("FailoverGroup", "shop", "shop"))

    def start_worker(self, name: str, *, wait: bool = True) -> WorkerProcess:
        worker = WorkerProcess(
            {**self.env, "FAILOVER_HOLDER": name},
            name=name,
            queues=self.settings.queue,
            log_path=self.tmp_path / f"{name}.log",
        )
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def gate(self, cluster: str, verb: str, plural: str) -> RequestGate:
        """Hold the next ``verb`` of ``plural`` on ``cluster`` at its API server (see RequestGate)."""
        made = RequestGate(self.fleet[cluster], verb, plural)
        self.gates.append(made)
        return made

    def submit(
        self,
        mode: str,
        source: str,
        target: str,
        name: str,
        *,
        group: FailoverGroup | None = None,
        timing: Timing = TIMING,
    ) -> str:
        """A run of a Failover ``name`` moving ``group`` (default: the sample group "shop") from
        ``source`` to ``target`` with ``timing``; the Failover is made in the group's namespace."""
        moved = group or self.group
        run = new_run(
            run_id=f"{name}-{uuid.uuid4().hex[:6]}",
            failover=failover(mode=mode, target=target, name=name, namespace=moved.metadata.namespace),
            group=moved,
            source_cluster=source,
            now=time.time(),
            timing=timing,
            nonce=uuid.uuid4().hex[:12],
        )
        assert self.engine.submit(run)
        return run.run_id

    def wait_for(self, run_id: str, done: Callable[[Run], bool], timeout: float = 60.0) -> Run:
        return wait_for_run(
            self.store, run_id, done, timeout=timeout, logs=[w.log_path for w in self.workers]
        )

    def finish(self, run_id: str, timeout: float = 60.0) -> Run:
        return self.wait_for(run_id, lambda r: r.terminal, timeout)

    def history(self, run_id: str | None = None) -> list[HistoryRecord]:
        found = self.coordination.history(SHOP, limit=100)
        return [h for h in found if run_id is None or h.run_id == run_id]

    def worker_logs(self) -> str:
        return "\n".join(w.log_path.read_text(errors="replace") for w in self.workers)

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``failoverctl ARGS`` as a separate process with this stack's settings."""
        env = {
            **os.environ,
            **self.env,
            "FAILOVER_KUBECONFIG": str(self.fleet.kubeconfig_for("operator")),  # failoverctl runs as a person
            "FAILOVER_LOG_LEVEL": "WARNING",
        }
        return subprocess.run(
            [sys.executable, "-c", "from producers.cli import main; main()", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def shorten_timeouts(fleet: SandboxFleet) -> None:
    for cluster in fleet:
        group = cluster.store.get("FailoverGroup", "shop", "shop")
        group["spec"]["timeouts"] = {**group["spec"].get("timeouts", {}), **SHORT_TIMEOUTS}
        group["spec"]["heartbeatInterval"] = "500ms"
        cluster.store.put(group)


def record_fence_refusals(cluster: SandboxCluster, into: list[str]) -> None:
    """Keep every admission denial of ``cluster`` that says ``fenced:`` (the sandbox's own record of
    what its API server refused). A no-op on a sandbox without admission."""
    admission = getattr(cluster, "admission", None)
    if admission is None:
        return
    admit = admission.admit

    def recording(attrs: Any, context: Any) -> None:
        try:
            admit(attrs, context)
        except Exception as error:
            if FENCED in str(error):
                into.append(f"{cluster.name}: {error}")
            raise

    admission.admit = recording


@pytest.fixture
def make_stack(
    redis_server_url: str,
    real_redis: redis.Redis,
    prefix: str,
    tmp_path: Path,
    dynamodb_endpoint: str,
) -> Iterator[Callable[..., ChaosStack]]:
    """``make_stack(clusters, fencing=True, **settings)``: the stack, started; stopped after the test.
    ``fencing=False`` leaves deploy/fencing's admission policies out of the clusters."""
    cleanups: list[Callable[[], None]] = []

    def make(
        clusters: tuple[str, ...] = ("site-a", "site-b"), *, fencing: bool = True, **overrides: Any
    ) -> ChaosStack:
        fleet = SandboxFleet(
            list(clusters),
            kubeconfig_path=tmp_path / "kubeconfig",
            install_fencing=fencing,
            **CONTROLLERS,
        )
        fleet.start()
        cleanups.append(fleet.stop)
        load_sample_fleet(fleet, active="site-a")
        shorten_timeouts(fleet)
        table = f"chaos-{uuid.uuid4().hex[:10]}"
        client = dynamodb_client(dynamodb_endpoint)
        cleanups.append(client.close)
        coordination = DynamoCoordination(table, client=client)
        coordination.ensure_table()
        coordination.set_initial_owner(SHOP, "site-a")
        values: dict[str, Any] = {
            "visibility_timeout": 60.0,
            "kubeconfig": str(fleet.kubeconfig_path),
            "clusters": list(clusters),
            "operator_id": OPERATOR,
            "dynamodb_table": table,
            "dynamodb_endpoint_url": dynamodb_endpoint,
            "lease_seconds": LEASE_SECONDS,
            "lease_margin": LEASE_MARGIN,
            "task_events": False,
            **overrides,
        }
        settings = stack_settings(redis_server_url, prefix, timing=TIMING, **values)
        env = worker_env(settings, FAILOVER_ADAPTERS="workers.container:production_adapters", **AWS_DUMMY_ENV)
        app = create_app(settings)
        clients = KubeClients(fleet.kubeconfig_path)
        cleanups.extend([app.close, clients.close])
        store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
        engine = Engine(
            store, Adapters(KubeEffects(clients), coordination), CelerySender(app, settings), settings
        )
        monitor = FleetMonitor(list(fleet))
        stack = ChaosStack(fleet, settings, env, coordination, store, engine, monitor, tmp_path)
        for cluster in fleet:
            record_fence_refusals(cluster, stack.refusals)
        monitor.start()
        cleanups.append(monitor.stop)

        def stop_workers() -> None:
            for worker in stack.workers:
                worker.stop()

        def remove_gates() -> None:
            for made in stack.gates:
                made.remove()

        # Gates open first: a request held at a server must not keep a worker from stopping.
        cleanups.extend([stop_workers, remove_gates])
        return stack

    try:
        yield make
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


class RequestGate:
    """Holds the first ``verb`` request on ``plural`` at ``cluster``'s API server (before it is
    handled, as a slow network or server would) until :meth:`release`; later requests pass.

    The sandbox runs in this process, so the gate wraps the cluster's fault check in place: nothing
    in ``sandbox/kube`` changes."""

    def __init__(self, cluster: SandboxCluster, verb: str, plural: str) -> None:
        self.cluster, self.verb, self.plural = cluster, verb, plural
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._taken = False
        self._lock = threading.Lock()
        self._check = cluster.faults.check
        cluster.faults.check = self._gated  # type: ignore[method-assign]

    def _gated(self, verb: str, plural: str, group: str, **kwargs: Any) -> None:
        if verb == self.verb and plural == self.plural:
            with self._lock:
                hold, self._taken = not self._taken, True
            if hold:
                self.arrived.set()
                self._released.wait(timeout=300)
        self._check(verb, plural, group, **kwargs)

    def release(self) -> None:
        self._released.set()

    def remove(self) -> None:
        self.release()
        self.cluster.faults.check = self._check  # type: ignore[method-assign]
