"""Benchmark: the run store's Redis round trips with redis-py's pure-Python RESP parser and with
hiredis (a dependency since 2026-12-07: ``redis[hiredis]``), in one run on this machine.

Each round is what a pool process does with Redis for one step message, minus the engine: load and
verify a stored run (one GET, its MAC and its parse), then three more reads (a GET, an HGETALL and an
LRANGE, as the claim, the wait registrations and the admission read). Each parser runs in a process of
its own (redis-py picks its parser at import: ``hiredis`` blocked in one of them), the two alternating
``--rounds`` times; it prints the CPU per round of each (median) and their ratio.

    .venv/bin/python -m tests.benchmarks.bench_redis_parser [--rounds 3] [--runs 50] [--passes 40]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import uuid


def measure(runs: int, passes: int) -> dict[str, float | bool]:
    """CPU and wall time per round in this process, with whichever parser redis-py picked."""
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    from fsm.run import new_run
    from sandbox.redis_server import delete_prefixed, redis_url
    from sandbox.stack import sandbox_signer
    from tests.factories import failover, group
    from workers.store import RunStore

    with redis_url() as url:
        client = redis.Redis.from_url(url)
        prefix = f"bench-parser-{uuid.uuid4().hex[:8]}:"
        try:
            store = RunStore(client, signer=sandbox_signer(), prefix=prefix)
            ids = []
            for index in range(runs):
                run = new_run(
                    run_id=f"r{index}",
                    failover=failover(),
                    group=group(),
                    source_cluster="site-a",
                    now=time.time(),
                )
                store.create(run)
                ids.append(run.run_id)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu, wall = usage.ru_utime + usage.ru_stime, time.perf_counter()
            for _ in range(passes):
                for run_id in ids:
                    store._opened.clear()  # as another process would: verify and parse the stored bytes
                    store.load(run_id)
                    client.get(f"{prefix}absent")
                    client.hgetall(f"{prefix}absent-hash")
                    client.lrange(f"{prefix}absent-list", 0, 10)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            rounds = runs * passes
            return {
                "hiredis": HIREDIS_AVAILABLE,
                "cpu_us": 1e6 * (usage.ru_utime + usage.ru_stime - cpu) / rounds,
                "wall_us": 1e6 * (time.perf_counter() - wall) / rounds,
            }
        finally:
            delete_prefixed(client, prefix)
            client.close()


def _child(hiredis: bool, runs: int, passes: int) -> dict[str, float | bool]:
    code = (
        ("" if hiredis else "import sys; sys.modules['hiredis'] = None\n")
        + "import json\nfrom tests.benchmarks.bench_redis_parser import measure\n"
        + f"print(json.dumps(measure({runs}, {passes})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    result: dict[str, float | bool] = json.loads(out.strip().splitlines()[-1])
    if result["hiredis"] is not hiredis:
        raise SystemExit(f"redis-py picked the wrong parser: {result} (is hiredis installed?)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each parser")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--passes", type=int, default=40)
    args = parser.parse_args()
    python, c = [], []
    for _ in range(args.rounds):
        python.append(_child(False, args.runs, args.passes))
        c.append(_child(True, args.runs, args.passes))
    py_cpu = statistics.median(float(r["cpu_us"]) for r in python)
    c_cpu = statistics.median(float(r["cpu_us"]) for r in c)
    py_wall = statistics.median(float(r["wall_us"]) for r in python)
    c_wall = statistics.median(float(r["wall_us"]) for r in c)
    print(
        f"{args.runs * args.passes} rounds x {args.rounds}, median per round (load, MAC and parse, 3 reads):"
    )
    print(f"  pure-Python parser: {py_cpu:.0f} us CPU, {py_wall:.0f} us wall")
    print(f"  hiredis:            {c_cpu:.0f} us CPU, {c_wall:.0f} us wall")
    print(f"  hiredis / Python: CPU {c_cpu / py_cpu:.2f}x, wall {c_wall / py_wall:.2f}x")


if __name__ == "__main__":
    main()
