"""Benchmark: the resident memory of a worker (its main process and its prefork child), idle and after runs.

Not a test: it prints figures measured in one run on this machine. Run it with
``.venv/bin/python -m tests.benchmarks.bench_rss [--runs 100] [--baseline DIR] [--no-cli] [--idle 12]``.

It starts, once: two sandbox clusters, each in its own process (site-a holding the active copies of
the sample group, site-b the passive ones), the DynamoDB stand-in of :mod:`tests.benchmarks.site_dynamo`
in its own process and real Redis (``REDIS_URL`` or 127.0.0.1:6379). Then, one after the other, a real
worker per variant (prefork, one child, the production adapters and the default timing, as
:mod:`tests.benchmarks.bench_site` starts them) under a fresh key prefix and DynamoDB table, with
groups of its own, and prints the RSS, PSS and USS (``/proc/<pid>/smaps_rollup``) of its main
process and of its pool child:

- ``idle``: ``--idle`` seconds after the worker said ready (the main process has sent heartbeats, run
  overdue sweeps and a recovery pass: all it ever does);
- ``peak``: the largest figures sampled every 0.5 s while ``--runs`` CONSISTENCY runs (one Failover per
  group) fail over from site-a to site-b;
- ``after``: once every run has finished.

The variants: ``before`` (with ``--baseline DIR``: the code of another checkout, e.g. one of the main
branch before a change, started as ``celery -A workers.tasks worker``), ``celery-cli`` (this checkout,
started the same way; ``--no-cli`` skips it) and ``run-worker`` (this checkout, started as
production starts it: ``python -m workers.run_worker``), then the ratios of each to the first. RSS
counts the pages the child shares with its parent (copy-on-write after the fork) in both processes;
PSS splits them between the two, so the sum of the PSS is what the worker costs the machine.
``bench_site`` reports the peak of the sum of the two RSS (printed here too).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import structlog

from fsm.models import Failover, FailoverGroup
from sandbox.celery_worker import WorkerProcess
from sandbox.dynamo import AWS_DUMMY_ENV
from sandbox.kube import SandboxFleet
from sandbox.kube.process import ProcessCluster
from sandbox.kube.samples import copy_to_namespace, sample_manifests
from sandbox.redis_server import delete_prefixed, redis_url
from sandbox.stack import worker_env
from tests.benchmarks.bench_site import DynamoStandIn, site_settings
from workers.api import Orchestrator

SITES = ("site-a", "site-b")
FIGURES = ("rss", "pss", "uss")
MiB = 2**20


# --- memory of a process ---------------------------------------------------------------------------


def memory(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of ``pid`` in bytes, from ``smaps_rollup``."""
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0]) * 1024
    except OSError:
        return dict.fromkeys(FIGURES, 0)
    return {
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def worker_memory(worker: WorkerProcess) -> dict[str, dict[str, int]]:
    """The figures of the worker's main process and of its pool child (zeros if it has none yet)."""
    main = worker.process.pid
    kids = children(main)
    return {"main": memory(main), "child": memory(kids[0]) if kids else dict.fromkeys(FIGURES, 0)}


class PeakSampler(threading.Thread):
    """The largest figures of each process of a worker, sampled every 0.5 s."""

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.peak: dict[str, dict[str, int]] = {p: dict.fromkeys(FIGURES, 0) for p in ("main", "child")}
        self.peak_sum = 0  # the peak of main RSS + child RSS sampled together (bench_site's figure)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            now = worker_memory(self.worker)
            for process, figures in now.items():
                for name, value in figures.items():
                    self.peak[process][name] = max(self.peak[process][name], value)
            self.peak_sum = max(self.peak_sum, now["main"]["rss"] + now["child"]["rss"])


# --- the stack -------------------------------------------------------------------------------------


def groups_from(first: int, count: int) -> list[FailoverGroup]:
    manifest = next(m for m in sample_manifests(True) if m["kind"] == "FailoverGroup")
    return [
        FailoverGroup.model_validate(copy_to_namespace(manifest, f"shop-{i:04d}"))
        for i in range(first, first + count)
    ]


def failover_for(group: FailoverGroup, tag: str) -> Failover:
    return Failover.model_validate(
        {
            "metadata": {"name": f"rss-{tag}", "namespace": group.metadata.namespace},
            "spec": {
                "targetCluster": "site-b",
                "failoverMode": "CONSISTENCY",
                "reason": "benchmark: site-a lost",
                "failoverGroups": [{"name": group.metadata.name, "namespace": group.metadata.namespace}],
            },
        }
    )


# --- one variant ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    code: Path | None  # None: this checkout
    celery_cli: bool  # started as ``celery -A workers.tasks worker`` (else ``python -m workers.run_worker``)

    def label(self) -> str:
        how = "celery -A workers.tasks worker" if self.celery_cli else "python -m workers.run_worker"
        return f"{self.name} ({self.code or 'this checkout'}; {how})"


@dataclass
class Stack:
    """What every variant shares: the clusters, the DynamoDB stand-in, Redis and a scratch directory."""

    fleet: SandboxFleet
    dynamo: DynamoStandIn
    url: str
    tmp: Path


def measure(
    stack: Stack, variant: Variant, groups: list[FailoverGroup], args: argparse.Namespace
) -> dict[str, Any]:
    """Start the variant's worker, measure it idle, through the runs and after."""
    code = variant.code
    url, tmp = stack.url, stack.tmp
    prefix = f"rss-{uuid.uuid4().hex[:8]}:"
    settings = site_settings(url, prefix, stack.fleet, stack.dynamo.endpoint, table="rss")
    prom_dir = tmp / f"prom-{prefix[:-1]}"
    prom_dir.mkdir()
    extra = {**AWS_DUMMY_ENV, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    if code is not None:
        extra["PYTHONPATH"] = str(code)
    env = worker_env(settings, **extra)
    with ExitStack() as cleanup:
        client = redis.Redis.from_url(url)
        cleanup.callback(client.close)
        cleanup.callback(delete_prefixed, client, prefix)
        handle = cleanup.enter_context(Orchestrator(settings))
        handle.init_table()
        for g in groups:
            handle.coordination.set_initial_owner(g.key, "site-a")
        # ``python -m`` puts its working directory first on sys.path: start it in the code's.
        with contextlib.chdir(code or Path.cwd()):
            worker = WorkerProcess(
                env,
                name=variant.name,
                queues=settings.queue,
                log_path=tmp / f"{prefix[:-1]}.log",
                celery_cli=variant.celery_cli,
            )
        cleanup.callback(worker.stop)
        worker.wait_ready(120)
        time.sleep(args.idle)
        idle = worker_memory(worker)
        sampler = PeakSampler(worker)
        sampler.start()
        cleanup.callback(sampler.stop.set)
        t0 = time.monotonic()
        run_ids = [
            handle.submit(
                failover_for(g, prefix[4:-1]), g, failover_cluster="site-a", source="site-a"
            ).run.run_id
            for g in groups
        ]
        deadline = time.monotonic() + args.timeout
        while client.zcard(f"{prefix}inflight") and time.monotonic() < deadline:
            time.sleep(1.0)
        wall = time.monotonic() - t0
        time.sleep(2.0)
        after = worker_memory(worker)
        sampler.stop.set()
        sampler.join()
        runs = [handle.run(run_id) for run_id in run_ids]
        return {
            "success": sum(1 for run in runs if run is not None and run.status.value == "SUCCESS"),
            "idle": idle,
            "peak": sampler.peak,
            "after": after,
            "peak_sum": sampler.peak_sum,
            "wall": wall,
        }


def _row(label: str, figures: dict[str, dict[str, int]]) -> str:
    m, c = figures["main"], figures["child"]
    return (
        f"  {label:5s} main RSS {m['rss'] / MiB:6.1f} PSS {m['pss'] / MiB:6.1f} USS {m['uss'] / MiB:6.1f} | "
        f"child RSS {c['rss'] / MiB:6.1f} PSS {c['pss'] / MiB:6.1f} USS {c['uss'] / MiB:6.1f} | "
        f"RSS sum {(m['rss'] + c['rss']) / MiB:6.1f}, PSS sum {(m['pss'] + c['pss']) / MiB:6.1f} MiB"
    )


def report(name: str, r: dict[str, Any], runs: int) -> str:
    lines = [f"{name}: {r['success']}/{runs} runs SUCCESS in {r['wall']:.1f} s"]
    lines += [_row(label, r[label]) for label in ("idle", "peak", "after")]
    lines.append(
        f"  peak of RSS main + child sampled together (bench_site's figure): {r['peak_sum'] / MiB:.1f} MiB"
    )
    return "\n".join(lines)


def ratios(name: str, current: dict[str, Any], base: str, baseline: dict[str, Any]) -> str:
    parts = []
    for label in ("idle", "peak"):
        for process in ("main", "child"):
            for figure in ("rss", "pss"):
                b = baseline[label][process][figure]
                if b:
                    parts.append(
                        f"{label} {process} {figure.upper()} {current[label][process][figure] / b:.2f}"
                    )
    b = baseline["peak_sum"]
    parts.append(f"peak RSS main + child {current['peak_sum'] / b:.2f}" if b else "")
    return f"  {name} / {base}: " + ", ".join(p for p in parts if p)


def variants(args: argparse.Namespace) -> list[Variant]:
    found = [] if args.baseline is None else [Variant("before", args.baseline.resolve(), True)]
    if not args.no_cli:
        found.append(Variant("celery-cli", None, True))
    found.append(Variant("run-worker", None, False))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="runs (one group each) per worker")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="a checkout whose worker to measure first"
    )
    parser.add_argument(
        "--no-cli", action="store_true", help="skip this checkout's worker under celery's CLI"
    )
    parser.add_argument("--idle", type=float, default=12.0, help="seconds idle before the first figures")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the runs")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    chosen = variants(args)
    total = args.runs * len(chosen)
    print(
        f"{args.runs} runs per worker (one CONSISTENCY Failover per group), {os.cpu_count()} cores",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        fleet = SandboxFleet(
            list(SITES), kubeconfig_path=Path(tmp) / "kubeconfig", processes=True, sample_groups=total
        )
        fleet.clusters["site-b"] = ProcessCluster("site-b", sample_groups=total, passive=True)
        stack.enter_context(fleet)
        dynamo = DynamoStandIn(stock=False)
        stack.callback(dynamo.stop)
        os.environ.update(AWS_DUMMY_ENV)
        url = stack.enter_context(redis_url())
        for i, variant in enumerate(chosen):
            groups = groups_from(i * args.runs, args.runs)
            results[variant.name] = measure(Stack(fleet, dynamo, url, Path(tmp)), variant, groups, args)
            print(report(variant.label(), results[variant.name], args.runs), flush=True)
    first = chosen[0].name
    for variant in chosen[1:]:
        print(ratios(variant.name, results[variant.name], first, results[first]))


if __name__ == "__main__":
    main()
