"""Benchmark: a whole site failing over at once (default 1,000 groups) on the real stack, judged
against every target of issue #15.

Not a test: it prints figures measured in one run on this machine. Run it with
``.venv/bin/python -m tests.benchmarks.bench_site [--groups 1000] [--layout single|bulk]
[--workers 1,2] [--dynamo patched|stock] [--timeout 600] [--probe-at 0.5] [--profile SECONDS]
[--waits RUNS] [--chain SECONDS] [--json PATH]``.

For each worker count it starts, from scratch:

- two sandbox clusters, each in its own process (``SandboxFleet(..., processes=True)``), so the API
  servers do not share the benchmark's interpreter: site-a holds N + 1 active copies of the sample
  group (namespaces ``shop-0000``...; the last one is the probe's), site-b as many passive ones; the
  controllers' default delays (0.2 s);
- the DynamoDB stand-in in its own process (:mod:`tests.benchmarks.site_dynamo`: moto, with its
  table-copying ``TransactWriteItems`` patched unless ``--dynamo stock``, the workers' hot operations
  served without moto's web framework), each group owned by site-a;
- real Redis (``REDIS_URL`` or 127.0.0.1:6379, keys under a fresh prefix, removed at the end);
- K real Celery worker processes (``python -m workers.run_worker``, prefork with one child each unless
  ``--pool threads|solo``/``--concurrency``) with the production adapters, the default timing and JSON
  logs, acting as the worker identity of deploy/rbac.

Then it submits N CONSISTENCY runs to site-b at once through ``Orchestrator.submit`` (as the watcher
does; the watcher itself does not run, so no Failover status is written). ``--layout single``: one
Failover per group made as the health checker makes them (:class:`fsm.autofailover.AutoFailover`:
labelled ``failover.hahomelabs.com/automatic``, the checker's kind of reason), so that automatic runs
are admitted as such; ``bulk``: operator Failovers listing 100 groups each. Once ``--probe-at`` of the
runs have started (judged on 40 of them), the fairness probe submits one operator Failover (no
automatic label) for the extra group and times it from submission to start (its ``started_at``) and
to finish (:mod:`tests.benchmarks.site_measure`). With ``--profile SECONDS``, on the largest worker
count, py-spy records a worker's main process, its pool child, site-a's sandbox process and the
DynamoDB stand-in for SECONDS from the moment the probe is submitted, the busiest phase: every run in flight
(:mod:`tests.benchmarks.site_profile`).

It prints, per worker count (:mod:`tests.benchmarks.site_targets`): wall time, runs/s, steps/s
(finished step records) and step messages/s; p50/p95/max run time from admission (``started_at``) and
from submission (``created_at``) with p95/median and max/median (one run per group: the spread over
groups); the probe's start and finish; the wait steps' time (an upper bound of the reaction latency:
the controllers settle within 0.3 s of a change); messages redriven (``run.redriven`` in the workers'
logs); Kubernetes API requests per group (counted by the sandbox's RBAC for the worker identity, the
probe's group included) and Failover writes by workers; DynamoDB calls per step message (counted by the
stand-in) and its mean time per TransactWriteItems; each worker's peak RSS, main process and pool
child apart; Redis bytes per finished run (MEMORY USAGE of its keys); client-side rate-limit waits;
the sandbox processes' CPU; the CPU each finished run cost per process (the workers' main and pool
processes, the sandbox clusters, the stand-in, Redis) and the cores used; the load average beside the
times. Then the table of the issue's targets,
each ``met``, ``NOT met`` or ``not measured`` (figures at fewer than 1,000 groups say so), with
``--waits RUNS`` the reaction latency of woken waits measured by
:func:`tests.benchmarks.bench_waits.measure`, and with ``--json PATH`` all figures as JSON.

The machine has two cores, shared by the workers, both sandbox clusters, the stand-in, Redis and
this process: the speed-up of a second worker is bounded by that. The targets table says by how much:
the wall time can be no less than the CPU per run times the runs over the cores, and the speed-up no
more than the cores over those one worker's site kept busy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
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
from sandbox.kube.process import ProcessCluster, cpu_seconds_of
from sandbox.kube.samples import copy_to_namespace, sample_manifests
from sandbox.redis_server import delete_prefixed, redis_url
from sandbox.stack import SANDBOX_OPERATOR_ID, stack_settings, worker_env
from tests.benchmarks import site_chain, site_machine, site_profile, site_targets
from tests.benchmarks.site_measure import FairnessProbe, RssSampler, children_of, wait_all
from tests.factories import automatic_failover
from workers.api import Orchestrator, run_id_for
from workers.settings import Settings

SITES = ("site-a", "site-b")
BULK = 100  # groups per Failover in the bulk layout

# --- the stack --------------------------------------------------------------------------------------


class DynamoStandIn:
    """The stand-in's process (see :mod:`tests.benchmarks.site_dynamo`)."""

    def __init__(self, stock: bool) -> None:
        command = [sys.executable, "-m", "tests.benchmarks.site_dynamo", *(["--stock"] if stock else [])]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.endpoint = f"http://127.0.0.1:{json.loads(self.process.stdout.readline())['port']}"
        self.pid = self.process.pid

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


def _operator(name: str, batch: list[FailoverGroup], reason: str) -> Failover:
    """A Failover as an operator writes it: no automatic label."""
    return Failover.model_validate(
        {
            "metadata": {"name": name, "namespace": batch[0].metadata.namespace},
            "spec": {
                "targetCluster": "site-b",
                "failoverMode": "CONSISTENCY",
                "reason": reason,
                "failoverGroups": [
                    {"name": g.metadata.name, "namespace": g.metadata.namespace} for g in batch
                ],
            },
        }
    )


def failovers_for(groups: list[FailoverGroup], layout: str, tag: str) -> list[tuple[Failover, FailoverGroup]]:
    """(Failover, group) pairs: an automatic Failover per group, or an operator one per ``BULK`` groups."""
    if layout == "single":
        return [(automatic_failover(g, epoch=f"bench-{tag}"), g) for g in groups]
    pairs = []
    for start in range(0, len(groups), BULK):
        batch = groups[start : start + BULK]
        failover = _operator(f"site-{tag}-{start:04d}", batch, "benchmark: site-a lost")
        pairs.extend((failover, g) for g in batch)
    return pairs


# --- one configuration ---------------------------------------------------------------------------------


def site_settings(
    url: str, prefix: str, fleet: SandboxFleet, dynamo: str, *, table: str = "bench"
) -> Settings:
    """The workers' settings of a benchmark: production timing and JSON logs, the fleet, the DynamoDB
    stand-in at ``dynamo`` with a new table named ``table-<hex>``."""
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
        dynamodb_table=f"{table}-{uuid.uuid4().hex[:6]}",
        dynamodb_endpoint_url=dynamo,
        operator_id=SANDBOX_OPERATOR_ID,
        aws_region=REGION,
        task_events=False,
        log_json=True,  # as deployed (deploy/config/settings.yaml)
    )


def _redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system, all its threads)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _redis_bytes(client: redis.Redis, prefix: str, runs: dict[str, Run]) -> float:
    """Mean MEMORY USAGE of a finished run's own keys (``run:<id>`` and anything else naming it)."""
    sizes = []
    for run_id in list(runs)[:200]:
        keys = list(client.scan_iter(match=f"{prefix}*{run_id}*", count=1000))
        sizes.append(sum(int(client.memory_usage(k) or 0) for k in keys))
    return sum(sizes) / len(sizes) if sizes else 0.0


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
    count = args.groups + 1  # the site's groups and the probe's
    fleet = SandboxFleet(list(SITES), kubeconfig_path=tmp / "kubeconfig", processes=True, sample_groups=count)
    fleet.clusters["site-b"] = ProcessCluster("site-b", sample_groups=count, passive=True)
    stack.enter_context(fleet)
    dynamo = DynamoStandIn(args.dynamo == "stock")
    stack.callback(dynamo.stop)
    url = stack.enter_context(redis_url())
    return fleet, dynamo, url


def _profiler(
    args: argparse.Namespace,
    procs: list[WorkerProcess],
    fleet: SandboxFleet,
    dynamo: DynamoStandIn,
    out: Path,
) -> site_profile.Profiler:
    """py-spy on the first worker (main process and pool child), site-a's sandbox process and the
    DynamoDB stand-in."""
    main = procs[0].process.pid
    targets = {"worker-main": main}
    for child in children_of(main)[:1]:
        targets["worker-child"] = child
    sandbox = getattr(fleet["site-a"], "_process", None)
    if sandbox is not None:
        targets["sandbox-site-a"] = sandbox.pid
    targets["dynamodb-stand-in"] = dynamo.pid
    return site_profile.Profiler(targets, args.profile, out)


def _workers(
    stack: ExitStack,
    settings: Settings,
    env: dict[str, str],
    count: int,
    logs: Path,
    *,
    pool: str = "prefork",
    concurrency: int = 1,
) -> list[WorkerProcess]:
    name = settings.key_prefix.rstrip(":")
    procs = [
        WorkerProcess(
            env,
            name=f"w{i}",
            queues=settings.queue,
            log_path=logs / f"{name}-w{i}.log",
            pool=pool,
            concurrency=concurrency,
        )
        for i in range(count)
    ]
    for worker in procs:
        stack.callback(worker.stop)
    for worker in procs:
        worker.wait_ready(120)
    return procs


def _k8s(fleet: SandboxFleet) -> dict[str, int]:
    by: dict[str, int] = {}
    for c in fleet:
        for (verb, _group, resource), n in c.requests_used().items():
            by[f"{verb} {resource}"] = by.get(f"{verb} {resource}", 0) + n
    return by


def _environment(
    settings: Settings, args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, str], Path, Path]:
    """The workers' environment, their metrics directory and where their logs go."""
    prom_dir = tmp / f"prom-{settings.key_prefix.rstrip(':')}"
    prom_dir.mkdir()
    logs: Path = args.logs or tmp
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.update(AWS_DUMMY_ENV)
    return worker_env(settings, **AWS_DUMMY_ENV, PROMETHEUS_MULTIPROC_DIR=str(prom_dir)), prom_dir, logs


def run_config(workers: int, args: argparse.Namespace, tmp: Path, profile: bool) -> dict[str, Any]:
    """One worker count from scratch: the stack, the site's runs and the probe, the raw figures."""
    started = time.monotonic()
    with ExitStack() as stack:
        fleet, dynamo, url = _start(stack, args, tmp)
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        settings = site_settings(url, prefix, fleet, dynamo.endpoint).model_copy(
            update={"outbox": not args.no_outbox}
        )
        env, prom_dir, logs = _environment(settings, args, tmp)
        client = redis.Redis.from_url(url)
        stack.callback(client.close)
        stack.callback(delete_prefixed, client, prefix)
        handle = stack.enter_context(Orchestrator(settings))
        handle.init_table()
        groups = groups_of(args.groups + 1)
        for g in groups:
            handle.coordination.set_initial_owner(g.key, "site-a")
        procs = _workers(stack, settings, env, workers, logs, pool=args.pool, concurrency=args.concurrency)
        sampler = RssSampler(procs)
        sampler.start()
        stack.callback(sampler.stop.set)
        setup = time.monotonic() - started
        k8s_before = sum(_k8s(fleet).values())
        dynamo_before = dynamo.calls()
        cpu_before = sum(c.cpu_seconds() for c in fleet)
        workers_before, dynamo_before_cpu = sampler.cpu(), cpu_seconds_of(dynamo.pid)
        redis_before = _redis_cpu(client)
        at_start = (os.getloadavg(), site_machine.speed())  # the load and the machine's speed
        tag = prefix[6:-1]
        pairs = failovers_for(groups[:-1], args.layout, tag)
        probe_pair = (_operator(f"probe-{tag}", groups[-1:], "benchmark: an operator's failover"), groups[-1])
        t0 = time.time()
        run_ids = [
            handle.submit(f, g, failover_cluster="site-a", source="site-a").run.run_id for f, g in pairs
        ]
        submitted = time.time() - t0
        profiler: list[site_profile.Profiler] = []

        def fire() -> None:
            if profile:
                profiler.append(_profiler(args, procs, fleet, dynamo, args.profile_dir))

        probe = FairnessProbe(
            settings, probe_pair, run_ids, fraction=args.probe_at, timeout=args.timeout, on_fire=fire
        )
        probe.start()
        runs = wait_all(handle.store, client, prefix, run_ids, args.timeout)
        wall = max((r.finished_at or time.time()) for r in runs.values()) - t0
        at_end = (os.getloadavg(), site_machine.speed())
        cpu = sum(c.cpu_seconds() for c in fleet) - cpu_before
        workers_after = sampler.cpu()
        cpu_of_all = {
            "worker_main": workers_after[0] - workers_before[0],
            "worker_pool": workers_after[1] - workers_before[1],
            "sandbox": cpu,
            "dynamodb": cpu_seconds_of(dynamo.pid) - dynamo_before_cpu,
            "redis": _redis_cpu(client) - redis_before,
        }
        probe.join(args.timeout)
        k8s_by = _k8s(fleet)
        dynamo_after = dynamo.calls()
        calls, seconds = dynamo_before["calls"], dynamo_before["seconds"]
        redriven = sum(w.log_path.read_text(errors="replace").count("run.redriven") for w in procs)
        assert run_ids == [run_id_for(f, g) for f, g in pairs]
        sampler.sample()
        return {
            "setup": setup,
            "submitted": submitted,
            "wall": wall,
            "runs": runs,
            "k8s": sum(k8s_by.values()) - k8s_before,
            "k8s_by": k8s_by,
            "redriven": redriven,
            "dynamo": {k: v - calls.get(k, 0) for k, v in dynamo_after["calls"].items()},
            "dynamo_s": {k: v - seconds.get(k, 0) for k, v in dynamo_after["seconds"].items()},
            "rss_main": sampler.main,
            "rss_child": sampler.child,
            "redis_bytes": _redis_bytes(client, prefix, runs),
            "throttle": _throttle(prom_dir),
            "load": (at_start[0], at_end[0]),
            "machine_ms": (at_start[1].one_ms, at_end[1].one_ms),
            "machine_two": (at_start[1].two_at_once, at_end[1].two_at_once),
            "sandbox_cpu": cpu,
            "cpu": cpu_of_all,
            "probe": probe.figures(),
            "profile": profiler[0].collect() if profiler else None,
        }


def reaction(runs: int) -> dict[str, Any]:
    """bench_waits's woken mode (watch events wake the waits), its own stack: the reaction figures."""
    from sandbox.dynamo import endpoint_of, moto_server
    from tests.benchmarks import bench_waits

    with redis_url() as url, moto_server() as moto:
        found, wall = bench_waits.measure(
            url, endpoint_of(moto), woken=True, runs=runs, rng=random.Random(15)
        )
    if not found:
        return {"waits": 0, "p50_ms": None, "p95_ms": None, "wall_s": wall}
    return {
        "waits": len(found),
        "p50_ms": bench_waits.quantile(found, 0.5) * 1000,
        "p95_ms": bench_waits.quantile(found, 0.95) * 1000,
        "max_ms": max(found) * 1000,
        "wall_s": wall,
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--layout", choices=("single", "bulk"), default="single")
    parser.add_argument("--workers", default="1,2", help="worker process counts to compare")
    parser.add_argument("--dynamo", choices=("patched", "stock"), default="patched")
    parser.add_argument(
        "--pool", choices=("prefork", "threads", "solo"), default="prefork", help="each worker's pool"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="each worker's pool size")
    parser.add_argument(
        "--no-outbox", action="store_true", help="send step messages through Celery after the commit"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the runs")
    parser.add_argument("--logs", type=Path, default=None, help="keep the workers' logs in this directory")
    parser.add_argument(
        "--probe-at", type=float, default=0.5, help="submit the probe once this share of the runs started"
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="py-spy for SECONDS (largest worker count)",
    )
    parser.add_argument(
        "--waits", type=int, default=0, metavar="RUNS", help="bench_waits woken runs (0: skip)"
    )
    parser.add_argument(
        "--chain",
        type=float,
        default=6.0,
        metavar="SECONDS",
        help="site_chain's phases (both shapes), before the worker counts (0: skip; with --workers 1,2)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file as JSON")
    args = parser.parse_args()
    args.profile_dir = Path(tempfile.mkdtemp(prefix="bench-site-profile-")) if args.profile else None
    return args


def main() -> None:
    args = _arguments()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"{args.groups} groups, layout {args.layout}, workers' pool {args.pool} x {args.concurrency}, "
        f"step messages {'sent after the commit' if args.no_outbox else 'pushed by the commit'}, "
        f"DynamoDB stand-in: moto ({args.dynamo}); "
        f"{os.cpu_count()} cores shared by everything",
        flush=True,
    )
    counts = [int(w) for w in args.workers.split(",")]
    chain = None
    if args.chain and {1, 2} <= set(counts):
        chain = (site_chain.chain(args.chain), site_chain.chain(args.chain, site_chain.ONE_HOP))
    chain_text = site_chain.describe(*chain) if chain else None
    if chain_text:
        print(chain_text, flush=True)
    configs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            result = run_config(count, args, Path(tmp), profile=bool(args.profile) and count == max(counts))
            figures = site_targets.figures(count, result, args.groups)
            configs.append(figures)
            print(site_targets.text(figures), flush=True)
            if result["profile"] is not None:
                figures["profile"] = result["profile"]
                print(site_profile.report(result["profile"], args.profile), flush=True)
    walls = {c["workers"]: c["wall_s"] for c in configs}
    if len(walls) > 1:
        low, high = min(walls), max(walls)
        print(f"speed-up {low} -> {high} workers: {walls[low] / walls[high]:.2f}x")
    waits = reaction(args.waits) if args.waits else None
    if waits is not None:
        print(
            f"woken waits (bench_waits, {args.waits} runs, {waits['wall_s']:.0f} s): {waits['waits']} waits "
            f"that found their objects not ready, reaction p50 {site_targets.ms(waits.get('p50_ms'))}, "
            f"p95 {site_targets.ms(waits.get('p95_ms'))}, max {site_targets.ms(waits.get('max_ms'))}",
            flush=True,
        )
    rows = site_targets.targets(configs, args.layout, waits, chain_text)
    print(site_targets.table(rows), flush=True)
    if args.json is not None:
        document = {
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cores": os.cpu_count(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "configs": configs,
            "waits": waits,
            "chain": None if chain is None else {"site": chain[0].figures(), "one_hop": chain[1].figures()},
        }
        args.json.write_text(json.dumps({**document, "targets": rows}, indent=2, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
