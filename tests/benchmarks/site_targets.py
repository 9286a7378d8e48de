"""The figures of :mod:`tests.benchmarks.bench_site` as plain numbers, their text, and issue #15's
targets judged against them (``met`` / ``NOT met`` / ``not measured``), also written as JSON.

Units: MB and KB are decimal (10^6 and 10^3 bytes), as the issue states its targets; MiB beside.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from fsm.run import Run

WAIT_STEPS = ("wait_scaled_down", "wait_volumes_demoted", "wait_volumes_released", "wait_volumes_promoted",
              "wait_ready")  # fmt: skip
SITE = 1000  # the site: its absolute targets are stated at 1,000 groups


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> dict[str, float | None]:
    """p50, p95, max and the ratios of p95 and max to the median."""
    median = statistics.median(values) if values else None
    p95, top = pct(values, 0.95), (max(values) if values else None)
    ok = median is not None and median > 0
    return {
        "p50": median,
        "p95": p95,
        "max": top,
        "p95_median": p95 / median if ok and p95 is not None else None,  # type: ignore[operator]
        "max_median": top / median if ok and top is not None else None,  # type: ignore[operator]
    }


def _failover_writes(by: dict[str, int]) -> int:
    """Writes of Failover objects (their status) by the worker identity: none should be in a step."""
    reads = ("get ", "list ", "watch ")
    return sum(
        n for k, n in by.items() if k.split(" ")[-1].startswith("failovers") and not k.startswith(reads)
    )


def figures(workers: int, r: dict[str, Any], groups: int) -> dict[str, Any]:
    """One worker count's figures. ``groups`` are the site's; the probe's group adds one to the
    per-group Kubernetes count (its requests are counted too)."""
    runs: list[Run] = list(r["runs"].values())
    done = [run for run in runs if run.finished_at]
    steps = sum(len(run.steps) for run in runs)
    messages = sum(run.tickets for run in runs)
    waits = [
        rec.finished_at - rec.started_at
        for run in runs
        for key, rec in run.steps.items()
        if key in WAIT_STEPS and rec.finished_at and rec.started_at
    ]
    counted = groups + (1 if r["probe"].get("run_id") else 0)
    dynamo_calls = sum(r["dynamo"].values())
    tx = r["dynamo"].get("TransactWriteItems", 0)
    wall = r["wall"]
    return {
        "workers": workers,
        "groups": groups,
        "success": sum(1 for run in runs if run.status.value == "SUCCESS"),
        "runs": len(runs),
        "wall_s": wall,
        "load_1min": [r["load"][0][0], r["load"][1][0]],
        "machine_ms": list(r["machine_ms"]),
        "machine_two": list(r["machine_two"]),
        "setup_s": r["setup"],
        "submit_s": r["submitted"],
        "runs_per_s": len(runs) / wall,
        "steps_per_s": steps / wall,
        "messages_per_s": messages / wall,
        "run_from_admission": spread([run.finished_at - run.started_at for run in done if run.started_at]),
        "run_from_submission": spread([run.finished_at - run.created_at for run in done]),  # type: ignore[operator]
        "admission_wait": spread([run.started_at - run.created_at for run in runs if run.started_at]),
        "wait_steps": {"p50": pct(waits, 0.5), "p95": pct(waits, 0.95)},
        "redriven": r["redriven"],
        "k8s_per_group": r["k8s"] / counted,
        "k8s_per_message": r["k8s"] / max(messages, 1),
        "k8s_by_per_group": {k: n / counted for k, n in sorted(r["k8s_by"].items(), key=lambda kv: -kv[1])},
        "failover_writes": _failover_writes(r["k8s_by"]),
        "throttled": r["throttle"][0],
        "throttle_s": r["throttle"][1],
        "dynamo_per_step": dynamo_calls / max(steps, 1),
        "dynamo_per_message": dynamo_calls / max(messages, 1),
        "dynamo_calls": dict(sorted(r["dynamo"].items())),
        "tx_ms": r["dynamo_s"].get("TransactWriteItems", 0.0) / tx * 1000 if tx else 0.0,
        "rss_main_mb": [b / 1e6 for b in r["rss_main"]],
        "rss_child_mb": [b / 1e6 for b in r["rss_child"]],
        "redis_bytes_per_run": r["redis_bytes"],
        "sandbox_cores": r["sandbox_cpu"] / wall,
        # CPU milliseconds per finished run, by process (less noisy than the wall time on a shared
        # machine: what a run costs, not how long it waited for a core).
        "cpu_ms_per_run": {k: v * 1000 / max(len(runs), 1) for k, v in r["cpu"].items()},
        "cores_used": sum(r["cpu"].values()) / wall,
        "probe": r["probe"],
    }


def _s(value: float | None, unit: str = " s", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def ms(value: float | None) -> str:
    return _s(value, " ms", 0)


def _spread(one: dict[str, float | None], *, ratios: bool = True) -> str:
    found = f"p50 {_s(one['p50'])}, p95 {_s(one['p95'])}, max {_s(one['max'])}"
    if not ratios:
        return found
    return f"{found} (p95/median {_s(one['p95_median'], '', 2)}, max/median {_s(one['max_median'], '', 2)})"


def _probe(p: dict[str, Any]) -> str:
    if p.get("run_id") is None:
        return f"probe: {p.get('status')}"
    return (
        f"probe (one operator Failover submitted when {p['site_started_fraction']:.0%} of the sampled "
        f"runs had started, {p['site_finished_fraction']:.0%} finished): started {_s(p['start_s'], ' s', 2)} "
        f"after submission, finished after {_s(p['finish_s'])}, {p['status']}"
    )


def text(f: dict[str, Any]) -> str:
    b1, a1 = f["load_1min"]
    mains = " + ".join(f"{m:.0f}" for m in f["rss_main_mb"])
    childs = " + ".join(f"{c:.0f}" for c in f["rss_child_mb"])
    waits = f["wait_steps"]
    return "\n".join(
        [
            f"{f['workers']} worker(s): {f['success']}/{f['runs']} SUCCESS in {f['wall_s']:.1f} s "
            f"(load avg 1 min {b1:.1f} -> {a1:.1f}; setup {f['setup_s']:.0f} s, "
            f"submitting {f['submit_s']:.1f} s; machine: a fixed workload {_machine(f)})",
            f"  {f['runs_per_s']:.2f} runs/s, {f['steps_per_s']:.1f} steps/s, "
            f"{f['messages_per_s']:.1f} step messages/s",
            f"  run time from admission (started_at): {_spread(f['run_from_admission'])}",
            f"  run time from submission (created_at): {_spread(f['run_from_submission'])}",
            "  submission to admission (started_at - created_at): "
            + _spread(f["admission_wait"], ratios=False),
            f"  {_probe(f['probe'])}",
            f"  wait steps (upper bound of reaction latency): p50 {_s(waits['p50'], ' s', 2)}, "
            f"p95 {_s(waits['p95'], ' s', 2)}; messages sent again by the overdue sweep: {f['redriven']}",
            f"  Kubernetes requests per group {f['k8s_per_group']:.1f} ({f['k8s_per_message']:.2f} per step "
            f"message); Failover writes by workers {f['failover_writes']}; rate-limit waits "
            f"{f['throttled']:.0f} requests, {f['throttle_s']:.1f} s",
            "  by request (per group, both clusters, the setup's few included): "
            + ", ".join(f"{k} {n:.1f}" for k, n in f["k8s_by_per_group"].items()),
            f"  DynamoDB calls per step message {f['dynamo_per_message']:.2f} "
            f"(per finished step record {f['dynamo_per_step']:.2f}; {f['dynamo_calls']}); "
            f"TransactWriteItems {f['tx_ms']:.1f} ms each at the stand-in",
            f"  worker RSS peak: main process {mains} MB, pool child {childs} MB; "
            f"Redis {f['redis_bytes_per_run'] / 1000:.1f} KB per finished run; "
            f"sandbox clusters {f['sandbox_cores']:.2f} cores over the wall time",
            "  CPU per run: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in f["cpu_ms_per_run"].items())
            + f"; {sum(f['cpu_ms_per_run'].values()):.0f} ms in all, {f['cores_used']:.2f} cores used",
        ]
    )


# --- the targets -------------------------------------------------------------------------------------


class Rows:
    """The table being built: target, what is wanted, the figure, and whether it is met."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, target: str, wanted: str, figure: str, ok: bool | None) -> None:
        verdict = "not measured" if ok is None else ("met" if ok else "NOT met")
        self.rows.append({"target": target, "wanted": wanted, "figure": figure, "verdict": verdict})


def _worst(values: list[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)


def _machine(config: dict[str, Any]) -> str:
    """The fixed workload's CPU time before the run and once its runs finished, and what two of it
    at once amounted to then (:mod:`tests.benchmarks.site_machine`)."""
    before, after = config["machine_ms"]
    two_before, two_after = config["machine_two"]
    return f"{before:.0f} -> {after:.0f} ms, two at once {two_before:.2f}x -> {two_after:.2f}x"


def _floor(config: dict[str, Any]) -> str:
    """The least wall time this machine allows for 1,000 runs at the CPU a run cost in ``config``: all
    its cores busy with nothing but the site (the workers, the sandbox, the stand-in, Redis)."""
    per_run = sum(config["cpu_ms_per_run"].values()) / 1000
    cores = os.cpu_count() or 1
    floor = 1000 * per_run / cores
    return f"CPU {per_run * 1000:.0f} ms per run: >= {floor:.0f} s for 1,000 on {cores} cores"


def _scale_rows(
    out: Rows, configs: list[dict[str, Any]], layout: str, scale: str, chain: str | None = None
) -> None:
    """Wall time, SUCCESS and the speed-up: the site as a whole. ``chain``: what a chain of the site's
    shape with no product code reached on this machine (:mod:`tests.benchmarks.site_chain`)."""
    top = max(configs, key=lambda c: c["workers"])
    b1, a1 = top["load_1min"]
    out.add(
        f"{top['groups']} groups, {layout}, {top['workers']} worker(s)",
        "<= 120 s at 1,000 groups",
        f"{top['wall_s']:.1f} s, load avg {b1:.1f} -> {a1:.1f}{scale}; {_floor(top)}",
        top["wall_s"] <= 120,
    )
    probes = [c["probe"] for c in configs]
    ok = sum(c["success"] for c in configs) + sum(1 for p in probes if p.get("status") == "SUCCESS")
    total = sum(c["runs"] for c in configs) + len(probes)
    out.add("every run SUCCESS", "all", f"{ok}/{total} (probes included)", ok == total)
    walls = {c["workers"]: c["wall_s"] for c in configs}
    if 1 in walls and 2 in walls:
        ratio = walls[1] / walls[2]
        one = next(c for c in configs if c["workers"] == 1)
        ceiling = (os.cpu_count() or 1) / one["cores_used"]
        two = next(c for c in configs if c["workers"] == 2)
        # The speed-up had a run cost the same CPU with one worker and two: the cores the two workers
        # kept busy, without the change of CPU per run between the halves, whether that was the
        # machine's drift or the product's own contention.
        steady = two["cores_used"] / one["cores_used"]
        figure = (
            f"{ratio:.2f}x{scale} ({steady:.2f}x at equal CPU per run: cores used {one['cores_used']:.2f} "
            f"-> {two['cores_used']:.2f}); at most {ceiling:.2f}x here: one worker's site already used "
            f"{one['cores_used']:.2f} of the {os.cpu_count()} cores; the fixed workload took "
            f"{_machine(one)} in the 1-worker run, {_machine(two)} in the 2-worker run"
        )
        if chain is not None:
            figure += f"; {chain}"
        out.add("speed-up 1 -> 2 workers", ">= 1.6x", figure, ratio >= 1.6)
    else:
        out.add("speed-up 1 -> 2 workers", ">= 1.6x", "needs --workers 1,2", None)


def _cost_rows(out: Rows, configs: list[dict[str, Any]], scale: str) -> None:
    """Requests, calls, memory: per group, step, process or run."""
    top = max(configs, key=lambda c: c["workers"])
    k8s, dynamo = top["k8s_per_group"], top["dynamo_per_message"]
    out.add("k8s requests per group", "<= 50 (half of 101)", f"{k8s:.1f}", k8s <= 50)
    # Per step message, as the issue measured its 1.47; per finished step record beside.
    figure = f"{dynamo:.3f} (per step record {top['dynamo_per_step']:.3f})"
    out.add("DynamoDB calls per step message", "<= 1.5", figure, dynamo <= 1.5)
    writes = sum(c["failover_writes"] for c in configs)
    out.add(
        "Failover status writes in steps", "0 (no step waits on one)", f"{writes} by workers", writes == 0
    )
    mains = max(m for c in configs for m in c["rss_main_mb"])
    childs = max(m for c in configs for m in c["rss_child_mb"])
    largest, which = max((mains, "main process"), (childs, "pool child"))
    out.add(
        "worker RSS per process (largest)",
        "<= 150 MB",
        f"{largest:.0f} MB, a {which} (mains {mains:.0f}, children {childs:.0f}){scale}",
        largest <= 150,
    )
    redis_kb = max(c["redis_bytes_per_run"] for c in configs) / 1000
    out.add("Redis per finished run", "<= 20 KB", f"{redis_kb:.1f} KB", redis_kb <= 20)
    redriven = sum(c["redriven"] for c in configs)
    out.add("messages redriven (no faults)", "0", str(redriven), redriven == 0)


def _fairness_rows(
    out: Rows, configs: list[dict[str, Any]], scale: str, waits: dict[str, Any] | None
) -> None:
    """The probe, the spread of run times, and the reaction of a wait (bench_waits)."""
    probes = [c["probe"] for c in configs]
    starts = [p.get("start_s") for p in probes]
    worst = _worst(starts)
    ok = None if not probes else (worst is not None and None not in starts and worst <= 1.0)
    out.add(
        "new operator Failover starts", "<= 1 s", f"{_s(worst, ' s', 2)} (worst of {len(probes)}){scale}", ok
    )
    ratio = _worst([c["run_from_admission"]["p95_median"] for c in configs])
    submitted = _worst([c["run_from_submission"]["p95_median"] for c in configs])
    out.add(
        "run time p95 / median (from admission)",
        "<= 2",
        f"{_s(ratio, '', 2)} (from submission {_s(submitted, '', 2)}){scale}",
        None if ratio is None else ratio <= 2,
    )
    wanted = "p50 <= 100 ms, p95 <= 1 s"
    if waits and waits.get("p50_ms") is not None:
        p50, p95 = waits["p50_ms"], waits["p95_ms"]
        figure = f"p50 {p50:.0f} ms, p95 {p95:.0f} ms ({waits['waits']} waits)"
        out.add("wait reaction (woken, bench_waits)", wanted, figure, p50 <= 100 and p95 <= 1000)
    else:
        out.add("wait reaction (woken, bench_waits)", wanted, "needs --waits RUNS", None)


def targets(
    configs: list[dict[str, Any]],
    layout: str,
    waits: dict[str, Any] | None,
    chain: str | None = None,
) -> list[dict[str, str]]:
    """Issue #15's targets: the largest worker count's figures (the issue's 2 workers), and the worst
    over every worker count for all-or-nothing ones (SUCCESS, redrives, RSS, probe, fairness).
    Absolute targets are stated at 1,000 groups: a smaller run's figure says at how many."""
    groups = configs[0]["groups"]
    scale = "" if groups >= SITE else f" (at {groups} groups, the target is at {SITE:,})"
    out = Rows()
    _scale_rows(out, configs, layout, scale, chain)
    _cost_rows(out, configs, scale)
    _fairness_rows(out, configs, scale, waits)
    return out.rows


def table(rows: list[dict[str, str]]) -> str:
    widths = [max(len(r[k]) for r in rows) for k in ("target", "wanted")]
    lines = ["targets (issue #15):"]
    for r in rows:
        target, wanted = r["target"].ljust(widths[0]), r["wanted"].ljust(widths[1])
        lines.append(f"  {r['verdict']:<12}  {target}  {wanted}  {r['figure']}")
    return "\n".join(lines)
