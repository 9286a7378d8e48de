"""Benchmark: the engine's per-step overhead against a bare Celery hop, memory per run and per worker.

Not a test: it prints figures measured in one run on this machine, so that the ratio compares like
with like. Run it with ``.venv/bin/python -m tests.benchmarks.bench_engine [--hops 300] [--runs 14]``.

- bare hop: a task that only enqueues the next one (``bench.hop``), N hops through one worker;
- engine step: failover runs whose adapters do nothing (``sandbox.null_adapters``), so each message
  costs exactly the engine's work: load the run, check the ticket, decide, compare-and-set, send;
- Redis memory held per finished run (``MEMORY USAGE`` of its key);
- resident memory of the worker's main process and of its prefork child.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis

from fsm.plan import Timing
from fsm.run import new_run
from sandbox.celery_worker import WorkerProcess
from sandbox.kube.process import rss_bytes_of
from sandbox.redis_server import delete_prefixed, redis_url
from sandbox.stack import SANDBOX_RUN_KEY, sandbox_signer
from tests.benchmarks.site_measure import children_of
from tests.factories import failover, group
from workers.app import create_app
from workers.engine import Engine
from workers.settings import Settings
from workers.store import RunStore
from workers.tasks import CelerySender

TIMING = Timing(poll_initial=0.0, poll_max=0.0, retry_initial=0.01, retry_max=0.05)


def bare_hops(client: redis.Redis, app: object, settings: Settings, hops: int) -> float:
    key = f"{settings.key_prefix}bench:done:{uuid.uuid4().hex}"
    started = time.time()
    app.send_task("bench.hop", args=[hops, key], queue=settings.queue)  # type: ignore[attr-defined]
    while (raw := client.get(key)) is None:
        time.sleep(0.1)
    return (float(raw) - started) / (hops + 1)


def engine_steps(engine: Engine, store: RunStore, runs: int) -> tuple[float, int, list[str]]:
    """Submit ``runs`` runs at once and time them through the one worker, start to last finish."""
    started = time.time()
    ids = []
    for index in range(runs):
        run = new_run(
            run_id=f"bench-{uuid.uuid4().hex[:8]}-{index}",
            failover=failover(),
            group=group(),
            source_cluster="site-a",
            now=time.time(),
            timing=TIMING,
        )
        engine.submit(run)
        ids.append(run.run_id)
    while True:
        time.sleep(0.1)  # poll rarely: the benchmark must not compete with the worker for the CPU
        finished = [run for run in (store.load(run_id) for run_id in ids) if run and run.terminal]
        if len(finished) == len(ids):
            break
    assert all(run.status.value == "SUCCESS" for run in finished), [r.message for r in finished]
    messages = sum(1 + sum(rec.attempts for rec in run.steps.values()) for run in finished)
    last = max(run.finished_at or 0.0 for run in finished)
    return (last - started) / messages, messages, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, default=300)
    parser.add_argument("--runs", type=int, default=14, help="failover runs (about 19 messages each)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--worker-log", type=Path, default=None, help="keep the worker's log here")
    parser.add_argument("--no-events", action="store_true", help="turn Celery task events off (no Flower)")
    parser.add_argument(
        "--no-outbox", action="store_true", help="send each step message through Celery after the commit"
    )
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with redis_url() as url, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            redis_url=url,
            key_prefix=prefix,
            broker_prefix=prefix,
            queue=f"{prefix}q",
            timing=TIMING,
            visibility_timeout=60,
            task_events=not args.no_events,
            run_key=SANDBOX_RUN_KEY,
        )
        env = {
            "FAILOVER_REDIS_URL": url,
            "FAILOVER_KEY_PREFIX": prefix,
            "FAILOVER_BROKER_PREFIX": prefix,
            "FAILOVER_QUEUE": settings.queue,
            "FAILOVER_TIMING": TIMING.model_dump_json(),
            "FAILOVER_VISIBILITY_TIMEOUT": "60",
            "FAILOVER_ADAPTERS": "sandbox.null_adapters:null_adapters",
            "FAILOVER_TASK_EVENTS": str(not args.no_events).lower(),
            "FAILOVER_OUTBOX": str(not args.no_outbox).lower(),
            "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        }
        client = redis.Redis.from_url(url)
        app = create_app(settings)
        store = RunStore(client, signer=sandbox_signer(), prefix=prefix)
        from sandbox.null_adapters import null_adapters

        engine = Engine(store, null_adapters(settings), CelerySender(app, settings), settings)
        # The benchmark worker loads the bench app: the product's tasks plus bench.hop.
        log_path = args.worker_log or Path(tmp) / "worker.log"
        worker = WorkerProcess(
            env, name="bench", queues=settings.queue, log_path=log_path, app="sandbox.bench_app"
        )
        try:
            worker.wait_ready()
            bare_hops(client, app, settings, 50)  # warm up both paths
            engine_steps(engine, store, 2)
            hop_times, step_times, total_messages, run_ids = [], [], 0, []
            for _ in range(args.rounds):
                hop_times.append(bare_hops(client, app, settings, args.hops))
                per_step, messages, ids = engine_steps(engine, store, args.runs)
                step_times.append(per_step)
                total_messages += messages
                run_ids += ids
            memory = [store.memory_usage(run_id) for run_id in run_ids]
            main_rss = rss_bytes_of(worker.process.pid) // 1024
            child_rss = [rss_bytes_of(pid) // 1024 for pid in children_of(worker.process.pid)]
        finally:
            worker.stop()
            delete_prefixed(client, prefix)
            client.close()
            app.close()
    hop, step = statistics.median(hop_times), statistics.median(step_times)
    print(f"task events               : {'off' if args.no_events else 'on (Flower)'}")
    print(
        f"step messages             : {'sent after the commit' if args.no_outbox else 'pushed by the commit'}"
    )
    print(
        f"bare Celery hop           : {hop * 1000:7.3f} ms  "
        f"(median of {args.rounds} rounds x {args.hops} hops)"
    )
    print(
        f"engine per-step           : {step * 1000:7.3f} ms  (median of {args.rounds} rounds, "
        f"{total_messages} step messages in all)"
    )
    print(f"ratio engine / bare hop   : {step / hop:7.2f}    (target <= 1.5)")
    print(
        f"Redis memory per run      : {statistics.mean(memory) / 1024:7.1f} KiB mean, "
        f"{max(memory) / 1024:.1f} KiB max over {len(memory)} finished runs (target <= 20 KB)"
    )
    print(
        f"worker resident memory    : main {main_rss / 1024:.1f} MiB, pool child "
        f"{', '.join(f'{c / 1024:.1f}' for c in child_rss)} MiB (target <= 150 MB)"
    )


if __name__ == "__main__":
    main()
