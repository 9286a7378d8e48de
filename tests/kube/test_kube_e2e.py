"""End to end on the real Kubernetes adapter: a real Celery worker (``celery -A workers.tasks``) on a
real Redis drives failovers of the sample group between two sandbox clusters, while a monitor thread
checks the safety invariants of each mode on the clusters' objects."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from fsm.models import Failover, FailoverGroup
from fsm.run import Run, RunStatus, new_run
from producers.failover_status import FailoverStatusReconciler
from producers.kube import connect
from sandbox.celery_worker import WorkerProcess
from sandbox.fakes import FakeCoordination
from sandbox.kube import SandboxCluster, SandboxFleet, load_sample_fleet
from sandbox.stack import FAST_TIMING, sandbox_signer, stack_settings, worker_env
from tests.factories import failover, group
from tests.kube.conftest import FAST
from tests.kube.invariants import InvariantMonitor, not_ready, snapshot, stood_down
from tests.waiting import wait_for_run
from workers.api import run_id_for
from workers.app import create_app
from workers.container import Adapters
from workers.engine import Engine
from workers.kube import KubeClients, KubeEffects
from workers.settings import Settings
from workers.store import RunStore
from workers.tasks import CelerySender

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMING = FAST_TIMING
EPOCH = "failover.hahomelabs.com/epoch"
# Controllers slow enough that every wait step finds its objects still moving at its first check.
CONTROLLERS = {**FAST, "workload_delay": 0.2, "volume_delay": 0.2, "flux_delay": 0.2}
WAITS = ("wait_scaled_down", "wait_volumes_demoted", "wait_volumes_promoted", "wait_ready")


@dataclass
class KubeStack:
    fleet: SandboxFleet
    env: dict[str, str]
    settings: Settings
    engine: Engine
    store: RunStore
    coordination: FakeCoordination
    group: FailoverGroup
    tmp_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, name: str) -> WorkerProcess:
        worker = WorkerProcess(
            self.env, name=name, queues=self.settings.queue, log_path=self.tmp_path / f"{name}.log"
        )
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def submit(self, mode: str, run_id: str = "run-1", request: Failover | None = None) -> str:
        run = new_run(
            run_id=run_id,
            failover=request or failover(mode=mode),
            group=self.group,
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


@pytest.fixture
def kube_stack(
    redis_server_url: str, real_redis: redis.Redis, prefix: str, tmp_path: Path
) -> Iterator[KubeStack]:
    with SandboxFleet(["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig", **CONTROLLERS) as fleet:
        load_sample_fleet(fleet, active="site-a")
        fleet["site-a"].store.put(
            {
                "apiVersion": "crd.hahomelabs.com/v1alpha1",
                "kind": "Failover",
                "metadata": {"name": "move-shop", "namespace": "shop"},
                "spec": {
                    "targetCluster": "site-b",
                    "failoverMode": "CONSISTENCY",
                    "failoverGroups": [{"name": "shop"}],
                },
            }
        )
        settings = stack_settings(redis_server_url, prefix, timing=TIMING)
        env = worker_env(
            settings,
            FAILOVER_ADAPTERS="sandbox.kube_adapters:kube_clusters_with_fake_coordination",
            FAILOVER_KUBECONFIG=str(fleet.kubeconfig_path),
            FAILOVER_FAKE_PREFIX=f"{prefix}fake:",
        )
        app = create_app(settings)
        clients = KubeClients(fleet.kubeconfig_path)
        coordination = FakeCoordination(real_redis, f"{prefix}fake:")
        g = group()
        coordination.set_initial_owner(g.key, "site-a")
        store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
        engine = Engine(
            store, Adapters(KubeEffects(clients), coordination), CelerySender(app, settings), settings
        )
        built = KubeStack(fleet, env, settings, engine, store, coordination, g, tmp_path)
        try:
            yield built
        finally:
            for worker in built.workers:
                worker.stop()
            clients.close()
            app.close()


def _assert_active(cluster: SandboxCluster, token: int) -> None:
    objects = snapshot(cluster, "shop")
    assert not_ready(objects) == []
    for (kind, name), obj in objects.items():
        assert obj["metadata"]["annotations"][EPOCH] == str(token), (kind, name)
    assert objects[("Deployment", "web")]["spec"]["replicas"] == 3
    assert objects[("StatefulSet", "cache")]["spec"]["replicas"] == 2
    release = objects[("HelmRelease", "shop")]
    requested = release["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
    assert release["status"]["lastHandledReconcileAt"] == requested
    assert (
        "kustomize.toolkit.fluxcd.io/reconcile"
        not in objects[("Deployment", "web")]["metadata"]["annotations"]
    )


def _assert_passive(cluster: SandboxCluster, token: int) -> None:
    objects = snapshot(cluster, "shop")
    assert sorted(stood_down(objects)) == sorted(f"{kind} {name}" for kind, name in objects)
    for (kind, name), obj in objects.items():
        assert obj["metadata"]["annotations"][EPOCH] == str(token), (kind, name)
        status = obj.get("status") or {}
        if kind in ("Deployment", "StatefulSet"):
            assert not status.get("readyReplicas") and not status.get("replicas"), (kind, name, status)
        if kind == "VolumeReplication":
            assert status["state"] == "Secondary"
    web = objects[("Deployment", "web")]["metadata"]["annotations"]
    assert (web["failover.hahomelabs.com/replicas"], web["kustomize.toolkit.fluxcd.io/reconcile"]) == (
        "3",
        "disabled",
    )


@pytest.mark.parametrize("mode", ["CONSISTENCY", "UPTIME"])
def test_a_failover_between_sandbox_clusters(kube_stack: KubeStack, mode: str) -> None:
    fleet = kube_stack.fleet
    monitor = InvariantMonitor(fleet["site-a"], fleet["site-b"], mode, kube_stack.group)
    name = f"move-shop-{mode.lower()}"
    fleet["site-a"].store.put(
        {
            "apiVersion": "crd.hahomelabs.com/v1alpha1",
            "kind": "Failover",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"targetCluster": "site-b", "failoverMode": mode, "failoverGroups": [{"name": "shop"}]},
        }
    )
    request = Failover.model_validate(fleet["site-a"].store.get("Failover", "shop", name))
    monitor.start()
    try:
        kube_stack.start_worker("w1")
        run_id = kube_stack.submit(mode, run_id_for(request, kube_stack.group), request)
        run = kube_stack.wait_for(run_id, lambda r: r.terminal)
    finally:
        monitor.stop()
    assert run.status is RunStatus.SUCCESS, run.message
    assert run.token is not None
    assert monitor.violations == []
    assert monitor.samples > 50, "the monitor must have watched the whole run"
    if mode == "UPTIME":
        assert monitor.first_stood_down, "the monitor saw the source stand down"
    assert kube_stack.coordination.active_cluster(kube_stack.group.key) == "site-b"
    _assert_active(fleet["site-b"], run.token)
    _assert_passive(fleet["site-a"], run.token)
    # Every wait polled the real controllers' progress at least once before they got there.
    assert {name: run.steps[name].checks >= 1 for name in WAITS} == dict.fromkeys(WAITS, True)
    # Workers write no status: one pass of the watcher's reconciler shows the run on the Failover.
    clients = connect(fleet.kubeconfig_for("watcher"), ["site-a"])
    try:
        reconciler = FailoverStatusReconciler(
            clients, lambda key: [r for r in [kube_stack.store.load(run_id)] if r and r.failover == key]
        )
        reconciler.reconcile("site-a", fleet["site-a"].store.get("Failover", "shop", name))
    finally:
        clients["site-a"].close()
    failover_status = fleet["site-a"].store.get("Failover", "shop", name)["status"]
    assert (failover_status["status"], failover_status["state"]) == ("SUCCESS", "SUCCEEDED")
    assert failover_status["failoverGroups"][0]["runId"] == run_id


def test_a_missing_object_fails_the_run_naming_kind_object_and_cluster(kube_stack: KubeStack) -> None:
    kube_stack.fleet["site-b"].store.delete("Deployment", "shop", "web")
    kube_stack.start_worker("w1")
    run = kube_stack.wait_for(kube_stack.submit("CONSISTENCY"), lambda r: r.terminal)
    assert run.status is RunStatus.FAILED
    assert run.failure is not None and run.failure.step.value == "validate"
    assert "Deployment shop/web" in run.message and "'site-b'" in run.message
    assert "does not exist" in run.message
    # Nothing was touched: the source still serves.
    assert not_ready(snapshot(kube_stack.fleet["site-a"], "shop")) == []


def test_rbac_denial_fails_the_run_naming_verb_and_resource(kube_stack: KubeStack) -> None:
    kube_stack.fleet["site-a"].faults.forbid("patch", "deployments")
    kube_stack.start_worker("w1")
    run = kube_stack.wait_for(kube_stack.submit("CONSISTENCY"), lambda r: r.terminal)
    assert run.status is RunStatus.FAILED
    assert run.failure is not None and run.failure.step.value == "scale_down_workloads"
    assert run.failure.cluster == "site-a"
    assert "patch" in run.message and "deployments" in run.message
    # Compensation put the network back on the source.
    notes = kube_stack.fleet["site-a"].store.get("Ingress", "shop", "web")["metadata"]["annotations"]
    assert notes["external-dns.alpha.kubernetes.io/controller"] == "dns-controller"


def test_a_source_that_stops_answering_fails_the_run_saying_so(kube_stack: KubeStack) -> None:
    kube_stack.start_worker("w1")
    run_id = kube_stack.submit("CONSISTENCY")
    kube_stack.wait_for(run_id, lambda r: r.token is not None)
    kube_stack.fleet["site-a"].set_down(True)
    try:
        run = kube_stack.wait_for(run_id, lambda r: r.terminal)
    finally:
        kube_stack.fleet["site-a"].set_down(False)
    assert run.status is RunStatus.FAILED
    assert "source cluster 'site-a' is unreachable" in run.message and "force: true" in run.message
    assert kube_stack.coordination.active_cluster(kube_stack.group.key) == "site-a"
