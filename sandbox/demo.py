"""The demo: two failovers end to end on local stand-ins, then everything it started stops.

Two sandbox Kubernetes clusters (``site-a`` active, ``site-b`` passive) loaded with the sample group
"shop", Redis (``REDIS_URL`` if it answers, else an embedded one), a moto DynamoDB server and one
real Celery worker running the production adapters (the official kubernetes client through a
kubeconfig, boto3 against DynamoDB), and the Failover watcher, which keeps the Failovers' status in
line with their runs. A CONSISTENCY failover moves the
group to site-b; an UPTIME failback brings it home. ``failoverctl demo`` runs it;
``failoverctl sandbox up`` (``python -m sandbox.demo --up``) leaves the environment running instead.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from fsm.models import Failover, FailoverGroup
from fsm.plan import Timing
from fsm.run import Run
from producers.kube import connect
from producers.views import console as make_console
from producers.views import live_view, run_view, summary
from producers.watcher import FailoverWatcher
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV, REGION, endpoint_of, moto_server
from sandbox.exports import export_lines, sandbox_exports, write_env_file
from sandbox.kube import SandboxCluster, SandboxFleet, load_sample_fleet
from sandbox.kube.fleet import write_kubeconfig
from sandbox.kube.identity import ADMIN
from sandbox.redis_server import delete_prefixed, redis_url
from sandbox.stack import SANDBOX_OPERATOR_ID, stack_settings, worker_env
from workers.api import Orchestrator
from workers.settings import Settings

TIMING = Timing(poll_initial=0.2, poll_factor=1.5, poll_max=1.0, retry_initial=0.2, retry_max=1.0)
CONTROLLERS: dict[str, Any] = {
    "tick": 0.05,
    "workload_delay": 0.3,
    "replica_step": 0.1,
    "volume_delay": 0.5,
    "volume_resync_delay": 0.5,
    "flux_delay": 0.3,
    "job_duration": 1.0,
}
NAMESPACE, GROUP = "shop", "shop"


@dataclass
class Environment:
    fleet: SandboxFleet
    settings: Settings
    env: dict[str, str]
    redis_url: str
    dynamodb_endpoint: str


@contextlib.contextmanager
def environment(workdir: Path) -> Iterator[Environment]:
    """Two sandbox clusters, Redis, DynamoDB (table created, group owned by site-a); stopped on exit."""
    prefix = f"demo-{uuid.uuid4().hex[:8]}:"
    table = f"failover-demo-{uuid.uuid4().hex[:6]}"
    with (
        SandboxFleet(["site-a", "site-b"], kubeconfig_path=workdir / "kubeconfig", **CONTROLLERS) as fleet,
        redis_url() as url,
        moto_server() as moto,
    ):
        load_sample_fleet(fleet, active="site-a")
        for cluster in fleet:
            _let_kubectl_in(cluster)
        endpoint = endpoint_of(moto)
        settings = stack_settings(
            url,
            prefix,
            timing=TIMING,
            visibility_timeout=60,
            kubeconfig=str(fleet.kubeconfig_path),
            clusters=["site-a", "site-b"],
            failover_cluster="site-a",
            dynamodb_table=table,
            dynamodb_endpoint_url=endpoint,
            operator_id=SANDBOX_OPERATOR_ID,
            aws_region=REGION,
        )
        env = worker_env(settings, **AWS_DUMMY_ENV)
        with _aws_env(env):
            handle = Orchestrator(settings)
            try:
                handle.init_table()
                group = _group(fleet)
                handle.coordination.set_initial_owner(group.key, "site-a")
            finally:
                handle.close()
        try:
            yield Environment(fleet, settings, env, url, endpoint)
        finally:
            client = redis.Redis.from_url(url)
            delete_prefixed(client, prefix)
            client.close()


def _let_kubectl_in(cluster: SandboxCluster) -> None:
    """kubectl sends no bearer token over plain HTTP, so it reaches the sandbox as system:anonymous.
    In the sandbox only (127.0.0.1, nothing real behind it), that user is a cluster admin, as a
    person with kubectl on their own cluster is: they apply their apps and groups and create
    Failovers. The components keep their own identities and deploy/rbac's roles."""
    for doc in (
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "sandbox-kubectl"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "sandbox-kubectl"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "sandbox-kubectl",
            },
            "subjects": [{"kind": "User", "name": "system:anonymous"}],
        },
    ):
        cluster.store.put(doc)


@contextlib.contextmanager
def _aws_env(env: dict[str, str]) -> Iterator[None]:
    """boto3 reads credentials from the environment: set the dummy ones for this process meanwhile."""
    import os

    names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _group(fleet: SandboxFleet) -> FailoverGroup:
    """The sample group as stored (its operatorID is SANDBOX_OPERATOR_ID, the stack's own)."""
    return FailoverGroup.model_validate(fleet["site-a"].store.get("FailoverGroup", NAMESPACE, GROUP))


def _failover(fleet: SandboxFleet, cluster: str, name: str, mode: str, target: str) -> Failover:
    manifest = {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "targetCluster": target,
            "failoverMode": mode,
            "reason": "demo",
            "failoverGroups": [{"name": GROUP}],
        },
    }
    fleet[cluster].store.put(manifest)
    return Failover.model_validate(manifest)


@contextlib.contextmanager
def _watcher(world: Environment, handle: Orchestrator) -> Iterator[FailoverWatcher]:
    """The Failover watcher, as it runs beside the workers: it writes the Failovers' status."""
    clients = connect(world.fleet.kubeconfig_for("watcher"), world.fleet.names)
    watcher = FailoverWatcher(handle, clients, operator_id=world.settings.operator_id, status_interval=0.2)
    try:
        with watcher:
            yield watcher
    finally:
        for client in clients.values():
            client.close()


def _final_status(fleet: SandboxFleet, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """The Failover's status once the watcher has shown its run's outcome (within a pass or two)."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = fleet["site-a"].store.get("Failover", NAMESPACE, name).get("status") or {}
        if status.get("status") in ("SUCCESS", "FAILED") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def _follow(console: Console, handle: Orchestrator, run_id: str, timeout: float = 180.0) -> Run:
    deadline = time.monotonic() + timeout
    run = handle.run(run_id)
    assert run is not None
    with live_view(console, run_view(run), refresh_per_second=8) as live:
        while not run.terminal and time.monotonic() < deadline:
            time.sleep(0.15)
            run = handle.run(run_id) or run
            live.update(run_view(run))
    return run


def describe(obj: dict[str, Any] | None) -> str:
    """One cell: what matters about the object for active/passive, read from the cluster."""
    if obj is None:
        return "missing"
    kind, spec, status = obj["kind"], obj.get("spec") or {}, obj.get("status") or {}
    notes = obj["metadata"].get("annotations") or {}
    if kind in ("Deployment", "StatefulSet"):
        return f"replicas {spec.get('replicas', 0)}, ready {status.get('readyReplicas', 0)}"
    if kind == "CronJob":
        return "suspended" if spec.get("suspend") else "running"
    if kind == "VolumeReplication":
        return f"{status.get('state', '?')} (spec {spec.get('replicationState')})"
    if kind in ("Ingress", "VirtualService"):
        return f"external-dns: {notes.get('external-dns.alpha.kubernetes.io/controller', '-')}"
    ready = next((c["status"] for c in status.get("conditions", []) if c.get("type") == "Ready"), "?")
    return "suspended" if spec.get("suspend") else f"resumed, Ready={ready}"


def final_state(fleet: SandboxFleet, group: FailoverGroup) -> Table:
    table = Table(title="final state of both clusters (read from their API servers)", title_justify="left")
    for column in ("object", "site-a", "site-b"):
        table.add_column(column)
    refs = [*group.workload_refs(), *group.volume_refs(), *group.network_refs(), *group.flux_refs()]
    for ref in refs:
        cells = [
            describe(fleet[c].store.find(ref.kind, ref.namespace, ref.name)) for c in ("site-a", "site-b")
        ]
        table.add_row(str(ref), *cells)
    return table


def run_demo(console: Console) -> int:
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp)) as world:
        console.print(
            f"[bold]clusters[/] site-a {world.fleet['site-a'].url}, site-b {world.fleet['site-b'].url}"
        )
        console.print(f"[bold]Redis[/] {world.redis_url}   [bold]DynamoDB[/] {world.dynamodb_endpoint}")
        worker = WorkerProcess(
            world.env, name="demo", queues=world.settings.queue, log_path=Path(tmp) / "worker.log"
        )
        results: list[Run] = []
        try:
            worker.wait_ready()
            console.print("[bold]worker[/] ready (celery -A workers.tasks worker, production adapters)\n")
            group = _group(world.fleet)
            with (
                _aws_env(world.env),
                Orchestrator(world.settings) as handle,
                _watcher(world, handle),
            ):
                for name, mode, target in (
                    ("move-shop", "CONSISTENCY", "site-b"),
                    ("bring-shop-home", "UPTIME", "site-a"),
                ):
                    failover = _failover(world.fleet, "site-a", name, mode, target)
                    submitted = handle.submit(failover, group, failover_cluster="site-a")
                    results.append(_follow(console, handle, submitted.run.run_id))
                    console.print()
                    status = _final_status(world.fleet, name)
                    console.print(
                        f"Failover {NAMESPACE}/{name} status: {status.get('status')}, "
                        f"metrics {status.get('metrics')}\n"
                    )
                console.print(final_state(world.fleet, group))
                history = handle.history(group.key)
                console.print(
                    f"[bold]history in DynamoDB[/]: {len(history)} records; active cluster now "
                    f"{handle.coordination.active_cluster(group.key)}"
                )
        finally:
            worker.stop()
        for run in results:
            console.print(f"[bold]{summary(run)}[/]")
    return 0 if len(results) == 2 and all(r.status.value == "SUCCESS" for r in results) else 1


def _announce(console: Console, world: Environment, workdir: Path, env_file: Path | None) -> None:
    """Print (and write to ``env_file``) how to reach the sandbox: plain lines, one export each."""
    fleet = world.fleet
    person = write_kubeconfig(list(fleet), workdir / "kubeconfig.person", user=ADMIN)
    exports = sandbox_exports(
        world.env,
        kubeconfig=person,
        operator_kubeconfig=fleet.kubeconfig_for("operator"),
        components={c: fleet.kubeconfig_for(c) for c in ("worker", "watcher", "health-checker")},
    )
    if env_file is not None:
        write_env_file(env_file, exports, header="failoverctl sandbox up: source this file (removed on stop)")
    console.print("sandbox up (Ctrl-C stops everything); a worker is running")
    for line in export_lines(exports):
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # whole, even on a tty
    if env_file is not None:
        console.print(f"# the same exports are in {env_file}: . {shlex.quote(str(env_file))}")
    console.print(f"# then: kubectl --context site-a get all -n {NAMESPACE}")
    console.print('# then: failoverctl watcher --kubeconfig "$SANDBOX_WATCHER_KUBECONFIG"')
    console.print(f"# worker log: {workdir / 'worker.log'}")


def sandbox_up(console: Console, env_file: Path | None = None) -> int:
    """Start the environment and a worker, print how to reach them, wait for Ctrl-C. The env file is
    the sandbox's: an old one goes at once (a script waiting for it never reads a stopped sandbox's),
    the new one is written when everything is up and removed on stop."""
    if env_file is not None:
        env_file = env_file.expanduser().absolute()
        env_file.unlink(missing_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="failover-sandbox-"))
    try:
        with environment(workdir) as world:
            worker = WorkerProcess(
                world.env, name="sandbox", queues=world.settings.queue, log_path=workdir / "worker.log"
            )
            try:
                worker.wait_ready()
                _announce(console, world, workdir, env_file)
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
            finally:
                worker.stop()
    finally:
        if env_file is not None:
            env_file.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--up", action="store_true", help="leave the environment running until Ctrl-C")
    parser.add_argument(
        "--env-file",
        type=Path,
        help="with --up: also write the exports to this file (for `source`; removed on stop)",
    )
    args = parser.parse_args()
    if args.env_file is not None and not args.up:
        parser.error("--env-file needs --up")

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops it like Ctrl-C does: through the finally blocks that stop what it started.
    signal.signal(signal.SIGTERM, interrupt)
    # Ctrl-C too, even when started in the background by a shell that ignores SIGINT for its jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console = make_console()
    return sandbox_up(console, args.env_file) if args.up else run_demo(console)


if __name__ == "__main__":
    raise SystemExit(main())
