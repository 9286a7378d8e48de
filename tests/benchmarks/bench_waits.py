"""Benchmark: how long after its objects reach the awaited state a wait step is left, woken by watch
events (``producers.waker``) against polling alone (the countdown of the default timing, 1 s growing
to 15 s).

Not a test: it prints figures measured in one run on this machine. Run it with
``.venv/bin/python -m tests.benchmarks.bench_waits [--runs 4] [--modes woken,polled]``.

Each mode starts its own stack: two sandbox clusters holding the sample group (the watcher's
identity and deploy/rbac enforced), moto, an embedded or local Redis, one real Celery worker with the
production adapters, and (mode ``woken``) the waker. It then fails the group over back and forth
``--runs`` times (CONSISTENCY), drawing the controllers' delays for each run: pods ready 5-20 s after
a spec change, volumes promoted or demoted 2-10 s after theirs. The sandbox store's own change
stream gives the moment each object first had the awaited role (the step's own judgement,
``fsm.kinds.judge``), after the step's first check; the reaction is the step's finish minus the
latest of those moments, for every wait that found its objects not ready at its first check.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis as redis_lib

from fsm.kinds import judge
from fsm.models import FailoverGroup
from fsm.plan import CATALOGUE, StepType, Timing
from fsm.run import Run
from producers.kube import ClusterClient
from producers.waker import WaitWaker
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV, dynamodb_client, endpoint_of, moto_server
from sandbox.kube import SandboxFleet, load_sample_fleet
from sandbox.redis_server import delete_prefixed, redis_url
from sandbox.stack import stack_settings, worker_env
from tests.autofailover.conftest import CLUSTERS, CONTROLLERS, OPERATOR, SHOP, shorten_timeouts
from tests.factories import failover
from tests.waiting import wait_for_run
from workers.api import Orchestrator, configure_logging
from workers.dynamo import DynamoCoordination

Seen = dict[tuple[str, str, str, str], list[tuple[float, dict[str, Any]]]]


class Changes:
    """Every object version the sandbox stores, with the time it was stored (the store's listener)."""

    def __init__(self, fleet: SandboxFleet) -> None:
        self.seen: Seen = {}
        self._lock = threading.Lock()
        for name in CLUSTERS:
            fleet[name].store.subscribe(lambda t, k, ns, n, obj, name=name: self._on(name, obj))

    def _on(self, cluster: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (cluster, str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            self.seen.setdefault(key, []).append((time.time(), copy.deepcopy(obj)))

    def reached(self, key: tuple[str, str, str, str], since: float, run: Run, role: Any) -> float | None:
        """When the object first had ``role`` at or after ``since`` (``since`` if it had it already)."""
        with self._lock:
            history = list(self.seen.get(key, []))
        requested = run.requested_at
        before = [obj for at, obj in history if at <= since]
        if before and judge(key[1], before[-1], role, requested_at=requested)[0]:
            return since
        for at, obj in history:
            if at > since and judge(key[1], obj, role, requested_at=requested)[0]:
                return at
        return None


def reactions(run: Run, changes: Changes) -> list[float]:
    """Step finish minus the moment its last object reached the role, for each wait that waited."""
    found = []
    for planned in run.plan:
        info, record = CATALOGUE[planned.step], run.steps.get(planned.step.value)
        cluster = run.cluster_for(planned.side)
        if info.type is not StepType.WAIT or info.role is None or record is None or not record.checks:
            continue
        if record.started_at is None or record.finished_at is None or cluster is None:
            continue
        moments = [
            changes.reached((cluster, ref.kind, ref.namespace, ref.name), record.started_at, run, info.role)
            for ref in run.resources.select(info.objects)
        ]
        if moments and all(m is not None for m in moments):
            found.append(record.finished_at - max(m for m in moments if m is not None))
    return found


@contextmanager
def stack(
    redis: str, dynamodb: str, tmp: Path, *, woken: bool
) -> Iterator[tuple[Any, Orchestrator, Changes]]:
    table = f"bench-waits-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack_:
        fleet = stack_.enter_context(
            SandboxFleet(CLUSTERS, kubeconfig_path=tmp / "kubeconfig", **CONTROLLERS)
        )
        load_sample_fleet(fleet, active="site-a")
        shorten_timeouts(fleet)
        for cluster in fleet:  # the deadlines of a real site, not the tests' short ones
            group = cluster.store.get("FailoverGroup", "shop", "shop")
            group["spec"]["timeouts"]["transitoryState"] = "10m"
            cluster.store.put(group)
        client = dynamodb_client(dynamodb)
        stack_.callback(client.close)
        coordination = DynamoCoordination(table, client=client)
        coordination.ensure_table()
        coordination.set_initial_owner(SHOP, "site-a")
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        keys = redis_lib.Redis.from_url(redis)
        stack_.callback(keys.close)
        # Last of all (after the worker and the waker stopped): this stack's keys, and only those.
        stack_.callback(delete_prefixed, keys, prefix)
        settings = stack_settings(
            redis,
            prefix,
            timing=Timing(),  # the default timing: polls 1 s growing to 15 s
            visibility_timeout=120,
            kubeconfig=str(fleet.kubeconfig_path),
            clusters=CLUSTERS,
            operator_id=OPERATOR,
            dynamodb_table=table,
            dynamodb_endpoint_url=dynamodb,
            wake_waits=woken,
        )
        env = worker_env(settings, FAILOVER_ADAPTERS="workers.container:production_adapters", **AWS_DUMMY_ENV)
        orchestrator = Orchestrator(settings, coordination=coordination)
        stack_.callback(orchestrator.close)
        worker = WorkerProcess(env, name="bench", queues=settings.queue, log_path=tmp / "worker.log")
        stack_.callback(worker.stop)
        worker.wait_ready()
        if woken:
            kubeconfig = fleet.kubeconfig_for("watcher")
            waker = WaitWaker(
                orchestrator.wakes(), CLUSTERS, lambda name: ClusterClient.from_kubeconfig(kubeconfig, name)
            ).start()
            stack_.callback(waker.stop)
        yield fleet, orchestrator, Changes(fleet)


def measure(
    redis: str, dynamodb: str, *, woken: bool, runs: int, rng: random.Random
) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp, stack(redis, dynamodb, Path(tmp), woken=woken) as built:
        fleet, orchestrator, changes = built
        found: list[float] = []
        started = time.monotonic()
        for index in range(runs):
            for cluster in fleet:
                cluster.controllers.workload_delay = rng.uniform(5.0, 20.0)
                cluster.controllers.volume_delay = rng.uniform(2.0, 10.0)
            target = "site-b" if index % 2 == 0 else "site-a"
            group = fleet[target].store.get("FailoverGroup", "shop", "shop")
            request = failover(target=target, name=f"bench-{index}")
            submission = orchestrator.submit(request, FailoverGroup.model_validate(group))
            run = wait_for_run(orchestrator.store, submission.run.run_id, lambda r: r.terminal, timeout=600)
            if run.status.value != "SUCCESS":
                raise SystemExit(f"run {index} ended {run.status.value}: {run.message}")
            found.extend(reactions(run, changes))
        return found, time.monotonic() - started


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4, help="failovers per mode (back and forth)")
    parser.add_argument("--modes", default="woken,polled", help="woken, polled or both")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    configure_logging(json=False, level="WARNING")
    with redis_url() as redis, moto_server() as moto:
        for mode in args.modes.split(","):
            rng = random.Random(args.seed)
            found, wall = measure(redis, endpoint_of(moto), woken=mode == "woken", runs=args.runs, rng=rng)
            if not found:
                print(f"{mode}: no wait found its objects not ready")
                continue
            print(
                f"{mode:>6}: {len(found)} waits over {args.runs} runs ({wall:.0f} s): reaction p50 "
                f"{statistics.median(found) * 1000:.0f} ms, p95 {quantile(found, 0.95) * 1000:.0f} ms, "
                f"max {max(found) * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
