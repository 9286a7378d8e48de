"""The engine demo: two failovers end to end on local stand-ins, then everything it started stops.

Redis (``REDIS_URL`` if it answers, else an embedded one), a moto DynamoDB server spoken to by the
real DynamoDB adapter (locks, owner, history, journal), one real Celery worker process, and the
Redis-backed fake clusters of ``sandbox.fakes``. A CONSISTENCY
failover moves the sample group "shop" from site-a to site-b; an UPTIME failback brings it home.
Run it with ``failoverctl demo`` (or ``python -m sandbox.engine_demo``).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from fsm.models import Failover, FailoverGroup
from fsm.plan import Timing
from fsm.run import Run, new_run
from producers.views import run_view, summary
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import (
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    REGION,
    dynamodb_client,
    endpoint_of,
    moto_server,
)
from sandbox.fakes import FakeClusters
from sandbox.redis_server import redis_url
from workers.app import create_app
from workers.container import Adapters
from workers.dynamo import DynamoCoordination
from workers.engine import Engine
from workers.ports import Role
from workers.settings import Settings
from workers.store import RunStore
from workers.tasks import CelerySender

TIMING = Timing(poll_initial=0.2, poll_factor=1.5, poll_max=1.0, retry_initial=0.2, retry_max=1.0)

GROUP = {
    "metadata": {"name": "shop", "namespace": "shop"},
    "spec": {
        "operatorID": "demo",
        "workloads": [
            {"kind": "StatefulSet", "name": "db", "volumeReplications": ["db-data"]},
            {"kind": "StatefulSet", "name": "cache", "volumeReplications": ["cache-data"]},
            {"kind": "Deployment", "name": "web"},
            {"kind": "CronJob", "name": "report"},
        ],
        "networkResources": [{"kind": "VirtualService", "name": "web"}, {"kind": "Ingress", "name": "web"}],
        "fluxResources": [{"kind": "HelmRelease", "name": "shop", "triggerReconcile": True}],
    },
}


def _failover(name: str, mode: str, target: str) -> Failover:
    return Failover.model_validate(
        {
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "targetCluster": target,
                "failoverMode": mode,
                "failoverGroups": [{"name": "shop"}],
                "reason": "demo",
            },
        }
    )


def _follow(console: Console, store: RunStore, run_id: str, timeout: float = 120.0) -> Run:
    deadline = time.monotonic() + timeout
    run = store.load(run_id)
    assert run is not None
    with Live(run_view(run), console=console, refresh_per_second=8, transient=False) as live:
        while not run.state.terminal and time.monotonic() < deadline:
            time.sleep(0.15)
            run = store.load(run_id) or run
            live.update(run_view(run))
    return run


def _final_state(clusters: FakeClusters, group: FailoverGroup) -> Table:
    table = Table(title="final state of both clusters", title_justify="left")
    for column in ("object", "site-a", "site-b"):
        table.add_column(column)
    refs = [*group.workload_refs(), *group.volume_refs(), *group.network_refs(), *group.flux_refs()]
    for ref in refs:
        table.add_row(
            str(ref), clusters.role("site-a", ref) or "missing", clusters.role("site-b", ref) or "missing"
        )
    return table


def main() -> int:
    console = Console()
    prefix = f"demo-{uuid.uuid4().hex[:8]}:"
    group = FailoverGroup.model_validate(GROUP)
    with redis_url() as url, moto_server() as moto, tempfile.TemporaryDirectory() as tmp:
        endpoint, table = endpoint_of(moto), "failover-demo"
        console.print(f"[bold]Redis[/] {url} (keys under {prefix!r})")
        console.print(f"[bold]DynamoDB[/] {endpoint} (moto server, table {table!r})")
        settings = Settings(
            redis_url=url,
            key_prefix=prefix,
            broker_prefix=prefix,
            queue=f"{prefix}steps",
            timing=TIMING,
            visibility_timeout=60,
            dynamodb_table=table,
            dynamodb_endpoint_url=endpoint,
        )
        client = redis.Redis.from_url(url)
        dynamo_client = dynamodb_client(endpoint)
        coordination = DynamoCoordination(table, client=dynamo_client)
        coordination.ensure_table()
        clusters = FakeClusters(client, f"{prefix}fake:", settle_checks=3)
        adapters = Adapters(effects=clusters, coordination=coordination)
        refs = [*group.workload_refs(), *group.volume_refs(), *group.network_refs(), *group.flux_refs()]
        clusters.load("site-a", refs, Role.ACTIVE, replicas=3)
        clusters.load("site-b", refs, Role.PASSIVE, replicas=3)
        adapters.coordination.set_initial_owner(group.key, "site-a")
        app = create_app(settings)
        store = RunStore(client, prefix=prefix)
        engine = Engine(store, adapters, CelerySender(app, settings), settings)
        env = {
            "FAILOVER_REDIS_URL": url,
            "FAILOVER_KEY_PREFIX": prefix,
            "FAILOVER_BROKER_PREFIX": prefix,
            "FAILOVER_QUEUE": settings.queue,
            "FAILOVER_TIMING": TIMING.model_dump_json(),
            "FAILOVER_VISIBILITY_TIMEOUT": "60",
            "FAILOVER_ADAPTERS": "sandbox.fakes:fake_clusters_with_dynamodb",
            "FAILOVER_FAKE_PREFIX": f"{prefix}fake:",
            "FAILOVER_FAKE_SETTLE_CHECKS": "3",
            "FAILOVER_DYNAMODB_TABLE": table,
            "FAILOVER_DYNAMODB_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }
        worker = WorkerProcess(env, name="demo", queues=settings.queue, log_path=Path(tmp) / "worker.log")
        results: list[Run] = []
        try:
            worker.wait_ready()
            console.print("[bold]worker[/] ready (celery -A workers.tasks worker)\n")
            for name, mode, source, target in (
                ("move-shop", "CONSISTENCY", "site-a", "site-b"),
                ("bring-shop-home", "UPTIME", "site-b", "site-a"),
            ):
                run = new_run(
                    run_id=f"{name}-{uuid.uuid4().hex[:6]}",
                    failover=_failover(name, mode, target),
                    group=group,
                    source_cluster=source,
                    now=time.time(),
                    timing=TIMING,
                )
                engine.submit(run)
                results.append(_follow(console, store, run.run_id))
                console.print()
            console.print(_final_state(clusters, group))
            history = coordination.history(group.key)
            console.print(
                f"[bold]history in DynamoDB[/]: {len(history)} records, newest: {history[0].outcome} "
                f"{history[0].source_cluster}→{history[0].target_cluster}; active cluster now "
                f"{coordination.active_cluster(group.key)}"
            )
        finally:
            worker.stop()
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)
            app.close()
            dynamo_client.close()
        for run in results:
            console.print(f"[bold]{summary(run)}[/]")
        client.close()
    return 0 if results and all(r.status.value == "SUCCESS" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
