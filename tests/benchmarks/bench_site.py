"""Benchmark: a whole site failing over at once (default 1,000 groups) on the real stack.

Not a test: it prints figures measured in one run on this machine. Run it with
``.venv/bin/python -m tests.benchmarks.bench_site [--groups 1000] [--layout single|bulk]
[--workers 1,2] [--dynamo patched|stock] [--timeout 600]``.

For each worker count it starts, from scratch:

- two sandbox clusters, each in its own process (``SandboxFleet(..., processes=True)``), so the API
  servers do not share the benchmark's interpreter: site-a holds N active copies of the sample group
  (namespaces ``shop-0000``...), site-b N passive ones; the controllers' default delays (0.2 s);
- the DynamoDB stand-in in its own process (:mod:`tests.benchmarks.site_dynamo`: moto, with its
  table-copying ``TransactWriteItems`` patched unless ``--dynamo stock``), each group owned by site-a;
- real Redis (``REDIS_URL`` or 127.0.0.1:6379, keys under a fresh prefix, removed at the end);
- K real Celery worker processes (``celery -A workers.tasks worker``, prefork, one child each) with
  the production adapters and the default timing, acting as the worker identity of deploy/rbac.

Then it submits N CONSISTENCY runs to site-b at once (``--layout single``: one Failover per group;
``bulk``: Failovers listing 100 groups each) through ``Orchestrator.submit`` (as the watcher does;
the watcher itself does not run, so no Failover status is written: workers never write it anyway)
and waits until every run has finished. It prints, per worker count: wall time, runs/s, steps/s
(finished step records) and step messages/s, p50/p95 run time (submission to finish), the wait steps'
time (an upper bound of the reaction latency: the controllers settle within 0.3 s of a change, so a
wait step is left that long after its objects are ready at best), Kubernetes API requests per group
(counted by the sandbox's RBAC for the worker identity), DynamoDB calls per step (counted by the
stand-in) and the stand-in's mean time per TransactWriteItems, the workers' peak RSS, Redis bytes
per finished run (MEMORY USAGE of its keys), client-side rate-limit waits, and the load average
beside the times; at the end the speed-up of the largest worker count over the smallest.

The machine has two cores, shared by the workers, both sandbox clusters, the stand-in, Redis and
this process: the speed-up of a second worker is bounded by that.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
import structlog

from fsm.models import Failover, FailoverGroup
from fsm.run import Run
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV, REGION
from sandbox.kube import SandboxFleet
from sandbox.kube.process import ProcessCluster
from sandbox.kube.samples import copy_to_namespace, sample_manifests
from sandbox.redis_server import redis_url
from sandbox.stack import SANDBOX_OPERATOR_ID, stack_settings, worker_env
from workers.api import Orchestrator, run_id_for
from workers.settings import Settings

SITES = ("site-a", "site-b")
BULK = 100  # groups per Failover in the bulk layout
WAIT_STEPS = ("wait_scaled_down", "wait_volumes_demoted", "wait_volumes_released", "wait_volumes_promoted",
              "wait_ready")  # fmt: skip


# --- the stack --------------------------------------------------------------------------------------


class DynamoStandIn:
    """The stand-in's process (see :mod:`tests.benchmarks.site_dynamo`)."""

    def __init__(self, stock: bool) -> None:
        command = [sys.executable, "-m", "tests.benchmarks.site_dynamo", *(["--stock"] if stock else [])]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.endpoint = f"http://127.0.0.1:{json.loads(self.process.stdout.readline())['port']}"

    def calls(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}/__calls", timeout=10) as answer:
            found: dict[str, Any] = json.loads(answer.read())
        return found

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def groups_of(count: int) -> list[FailoverGroup]:
    manifest = next(m for m in sample_manifests(True) if m["kind"] == "FailoverGroup")
    return [FailoverGroup.model_validate(copy_to_namespace(manifest, f"shop-{i:04d}")) for i in range(count)]


def failovers_for(groups: list[FailoverGroup], layout: str, tag: str) -> list[tuple[Failover, FailoverGroup]]:
    """(Failover, group) pairs: one Failover per group, or one per ``BULK`` groups (the first's namespace)."""
    size = 1 if layout == "single" else BULK
    pairs = []
    for start in range(0, len(groups), size):
        batch = groups[start : start + size]
        failover = Failover.model_validate(
            {
                "metadata": {"name": f"site-{tag}-{start:04d}", "namespace": batch[0].metadata.namespace},
                "spec": {
                    "targetCluster": "site-b",
                    "failoverMode": "CONSISTENCY",
                    "reason": "benchmark: site-a lost",
                    "failoverGroups": [
                        {"name": g.metadata.name, "namespace": g.metadata.namespace} for g in batch
                    ],
                },
            }
        )
        pairs.extend((failover, g) for g in batch)
    return pairs


def _tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its children (a worker and its prefork child)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    """The peak RSS of each worker (main process + child), sampled every second."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        super().__init__(daemon=True)
        self.workers = workers
        self.peak = [0] * len(workers)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for i, worker in enumerate(self.workers):
                self.peak[i] = max(self.peak[i], _tree_rss(worker.process.pid))


# --- one configuration ---------------------------------------------------------------------------------


def _settings(url: str, prefix: str, fleet: SandboxFleet, dynamo: DynamoStandIn) -> Settings:
    defaults = Settings.model_fields
    return stack_settings(
        url,
        prefix,
        timing=defaults["timing"].get_default(call_default_factory=True),
        # Production values, not the tests' short ones: a long queue is not a lost message.
        visibility_timeout=defaults["visibility_timeout"].default,
        redrive_after=defaults["redrive_after"].default,
        kubeconfig=str(fleet.kubeconfig_path),
        clusters=list(SITES),
        dynamodb_table=f"bench-{uuid.uuid4().hex[:6]}",
        dynamodb_endpoint_url=dynamo.endpoint,
        operator_id=SANDBOX_OPERATOR_ID,
        aws_region=REGION,
        task_events=False,
    )


def _wait_all(
    handle: Orchestrator, client: redis.Redis, prefix: str, run_ids: list[str], timeout: float
) -> dict[str, Run]:
    """Every run once none is in flight (the store's in-flight index is empty) or at the timeout.
    Polling the index, not the runs, keeps this process off the cores the workers need."""
    deadline = time.monotonic() + timeout
    while client.zcard(f"{prefix}inflight") and time.monotonic() < deadline:
        time.sleep(1.0)
    runs = {run_id: handle.run(run_id) for run_id in run_ids}
    return {run_id: run for run_id, run in runs.items() if run is not None}


def _redis_bytes(client: redis.Redis, prefix: str, runs: dict[str, Run]) -> float:
    """Mean MEMORY USAGE of a finished run's own keys (``run:<id>`` and anything else naming it)."""
    sizes = []
    for run_id in list(runs)[:200]:
        keys = list(client.scan_iter(match=f"{prefix}*{run_id}*", count=1000))
        sizes.append(sum(int(client.memory_usage(k) or 0) for k in keys))
    return statistics.mean(sizes) if sizes else 0.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _throttle(prom_dir: Path) -> tuple[float, float]:
    """(requests throttled, seconds waited) by the client-side rate limit, from the workers' metrics."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(prom_dir))
    throttled = waited = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "failover_kube_throttled_requests_total":
                throttled += sample.value
            elif sample.name == "failover_kube_throttle_seconds_total":
                waited += sample.value
    return throttled, waited


def _start(stack: ExitStack, args: argparse.Namespace, tmp: Path) -> tuple[SandboxFleet, DynamoStandIn, str]:
    fleet = SandboxFleet(
        list(SITES), kubeconfig_path=tmp / "kubeconfig", processes=True, sample_groups=args.groups
    )
    fleet.clusters["site-b"] = ProcessCluster("site-b", sample_groups=args.groups, passive=True)
    stack.enter_context(fleet)
    dynamo = DynamoStandIn(args.dynamo == "stock")
    stack.callback(dynamo.stop)
    url = stack.enter_context(redis_url())
    return fleet, dynamo, url


def run_config(workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    with ExitStack() as stack:
        fleet, dynamo, url = _start(stack, args, tmp)
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        settings = _settings(url, prefix, fleet, dynamo)
        prom_dir = tmp / f"prom-{prefix[:-1]}"
        logs = args.logs or tmp
        logs.mkdir(parents=True, exist_ok=True)
        prom_dir.mkdir()
        env = worker_env(settings, **AWS_DUMMY_ENV, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
        os.environ.update(AWS_DUMMY_ENV)
        client = redis.Redis.from_url(url)
        stack.callback(client.close)
        stack.callback(lambda: [client.delete(k) for k in client.scan_iter(match=f"{prefix}*", count=1000)])
        handle = stack.enter_context(Orchestrator(settings))
        handle.init_table()
        groups = groups_of(args.groups)
        for g in groups:
            handle.coordination.set_initial_owner(g.key, "site-a")
        procs = [
            WorkerProcess(env, name=f"w{i}", queues=settings.queue, log_path=logs / f"{prefix[:-1]}-w{i}.log")
            for i in range(workers)
        ]
        for worker in procs:
            stack.callback(worker.stop)
        for worker in procs:
            worker.wait_ready(120)
        sampler = RssSampler(procs)
        sampler.start()
        stack.callback(sampler.stop.set)
        setup = time.monotonic() - started
        k8s_before = {c.name: sum(c.requests_used().values()) for c in fleet}
        dynamo_before = dynamo.calls()
        load_before = os.getloadavg()
        pairs = failovers_for(groups, args.layout, prefix[6:-1])
        t0 = time.time()
        run_ids = [
            handle.submit(f, g, failover_cluster="site-a", source="site-a").run.run_id for f, g in pairs
        ]
        submitted = time.time() - t0
        runs = _wait_all(handle, client, prefix, run_ids, args.timeout)
        wall = max((r.finished_at or time.time()) for r in runs.values()) - t0
        load_after = os.getloadavg()
        k8s_by: dict[str, int] = {}
        for c in fleet:
            for (verb, _group, resource), n in c.requests_used().items():
                k8s_by[f"{verb} {resource}"] = k8s_by.get(f"{verb} {resource}", 0) + n
        k8s = sum(k8s_by.values()) - sum(k8s_before.values())
        dynamo_after = dynamo.calls()
        calls, seconds = dynamo_before["calls"], dynamo_before["seconds"]
        redriven = sum(w.log_path.read_text(errors="replace").count("run.redriven") for w in procs)
        assert run_ids == [run_id_for(f, g) for f, g in pairs]
        return {
            "setup": setup,
            "submitted": submitted,
            "wall": wall,
            "runs": runs,
            "k8s": k8s,
            "k8s_by": k8s_by,
            "redriven": redriven,
            "dynamo": {k: v - calls.get(k, 0) for k, v in dynamo_after["calls"].items()},
            "dynamo_s": {k: v - seconds.get(k, 0) for k, v in dynamo_after["seconds"].items()},
            "rss": sampler.peak,
            "redis_bytes": _redis_bytes(client, prefix, runs),
            "throttle": _throttle(prom_dir),
            "load": (load_before, load_after),
        }


def report(workers: int, r: dict[str, Any], groups: int) -> str:
    runs: list[Run] = list(r["runs"].values())
    ok = sum(1 for run in runs if run.status.value == "SUCCESS")
    times = [(run.finished_at or 0) - run.created_at for run in runs if run.finished_at]
    steps = sum(len(run.steps) for run in runs)
    messages = sum(run.tickets for run in runs)
    waits = [
        rec.finished_at - rec.started_at
        for run in runs
        for key, rec in run.steps.items()
        if key in WAIT_STEPS and rec.finished_at and rec.started_at
    ]
    dynamo_calls = sum(r["dynamo"].values())
    tx = r["dynamo"].get("TransactWriteItems", 0)
    tx_ms = r["dynamo_s"].get("TransactWriteItems", 0.0) / tx * 1000 if tx else 0.0
    throttled, waited = r["throttle"]
    (b1, _, _), (a1, _, _) = r["load"]
    wall = r["wall"]
    by = r["k8s_by"]
    return "\n".join(
        [
            f"{workers} worker(s): {ok}/{len(runs)} SUCCESS in {wall:.1f} s "
            f"(load avg 1 min {b1:.1f} -> {a1:.1f}; setup {r['setup']:.0f} s, "
            f"submitting {r['submitted']:.1f} s)",
            f"  {len(runs) / wall:.2f} runs/s, {steps / wall:.1f} steps/s, "
            f"{messages / wall:.1f} step messages/s; "
            f"run time p50 {_pct(times, 0.5):.1f} s, p95 {_pct(times, 0.95):.1f} s",
            f"  wait steps (upper bound of reaction latency): p50 {_pct(waits, 0.5):.2f} s, "
            f"p95 {_pct(waits, 0.95):.2f} s; messages sent again by the overdue sweep: {r['redriven']}",
            f"  Kubernetes requests per group {r['k8s'] / groups:.1f} "
            f"({r['k8s'] / max(messages, 1):.2f} per step message); "
            f"rate-limit waits {throttled:.0f} requests, {waited:.1f} s",
            "  by request (per group, both clusters, the setup's few included): "
            + ", ".join(f"{k} {n / groups:.1f}" for k, n in sorted(by.items(), key=lambda kv: -kv[1])),
            f"  DynamoDB calls per step {dynamo_calls / max(steps, 1):.2f} (per message "
            f"{dynamo_calls / max(messages, 1):.2f}; {dict(sorted(r['dynamo'].items()))}); "
            f"TransactWriteItems {tx_ms:.1f} ms each at the stand-in",
            f"  worker RSS peak {', '.join(f'{b / 2**20:.0f} MiB' for b in r['rss'])}; "
            f"Redis {r['redis_bytes'] / 1024:.1f} KiB per finished run",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--layout", choices=("single", "bulk"), default="single")
    parser.add_argument("--workers", default="1,2", help="worker process counts to compare")
    parser.add_argument("--dynamo", choices=("patched", "stock"), default="patched")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the runs")
    parser.add_argument("--logs", type=Path, default=None, help="keep the workers' logs in this directory")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"{args.groups} groups, layout {args.layout}, DynamoDB stand-in: moto ({args.dynamo}); "
        f"{os.cpu_count()} cores shared by everything",
        flush=True,
    )
    walls: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(w) for w in args.workers.split(",")):
            result = run_config(count, args, Path(tmp))
            walls[count] = result["wall"]
            print(report(count, result, args.groups), flush=True)
    if len(walls) > 1:
        low, high = min(walls), max(walls)
        print(f"speed-up {low} -> {high} workers: {walls[low] / walls[high]:.2f}x")


if __name__ == "__main__":
    main()
