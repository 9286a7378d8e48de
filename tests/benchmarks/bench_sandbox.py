"""Benchmark: what the sandbox's two clusters cost with a whole site of groups (default 1,000 each).

Not a test: it prints figures measured in one run on this machine, so that configurations compare like
with like. Run it with ``.venv/bin/python -m tests.benchmarks.bench_sandbox [--groups 1000]
[--requests 4000] [--configs passes,events,processes]``.

For each configuration it starts two clusters (site-a holding N active copies of the sample group,
site-b N passive ones, namespaces ``shop-0000``...), lets them settle, then:

- idle: the sandbox's CPU over ``--idle`` seconds with every object in place and nothing changing
  (the controllers' cost at rest: full passes scan everything every tick, events cost nothing);
- load: client processes (``--clients`` x ``--threads``) drive a failover's request mix through the
  real ``kubernetes`` client with the product's identities and RBAC enforced: GETs of workloads,
  volumes, HelmReleases and FailoverGroups, merge PATCHes carrying the resourceVersion they were read
  at (replicas, replicationState, a reconcile request), the ``/scale`` subresource, LIST of Jobs by
  label, while watches (Failovers cluster-wide with bookmarks, Deployments by label cluster-wide) run;
  it prints requests/s and the sandbox's CPU-seconds per 1,000 requests;
- the sandbox's resident memory.

Configurations: ``passes`` (in-process, controllers making a full pass every tick: the old design),
``events`` (in-process, event-driven controllers: the default), ``processes`` (event-driven, each
cluster in its own process: ``SandboxFleet(..., processes=True)``). In-process, the sandbox's CPU is
this process's (the clients run in others); with processes, the two children's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.kube import SandboxFleet
from sandbox.kube.samples import sample_manifests, settled_status

SITES = ("site-a", "site-b")
DEPLOY = ("apps", "v1", "deployments")
STS = ("apps", "v1", "statefulsets")
VR = ("replication.storage.openshift.io", "v1alpha1", "volumereplications")
HR = ("helm.toolkit.fluxcd.io", "v2", "helmreleases")
FG = ("crd.hahomelabs.com", "v1alpha1", "failovergroups")


def populate(cluster: Any, groups: int, *, active: bool) -> None:
    """N copies of the sample group, statuses settled (only APIs the sandbox has always had)."""
    manifests = sample_manifests(active)
    for index in range(groups):
        namespace = f"shop-{index:04d}"
        for manifest in manifests:
            obj = {**manifest, "metadata": {**manifest["metadata"]}}
            if obj["kind"] == "Namespace":
                obj["metadata"]["name"] = namespace
            else:
                obj["metadata"]["namespace"] = namespace
            stored = cluster.store.put(obj)
            status = settled_status(stored)
            if status is not None:
                stored["status"] = status
                cluster.store.put(stored)


# --- the clients (separate processes) ---------------------------------------------------------------


def _drain(response: Any) -> int:
    """Read an answer to its end (so its connection goes back to the pool); its size."""
    return len(response.data)


def _iteration(clients: dict[str, Any], rng: random.Random, groups: int) -> int:
    """One failover-like burst on one group of one cluster; returns the number of requests made."""
    from kubernetes import client

    ns = f"shop-{rng.randrange(groups):04d}"
    worker = client.CustomObjectsApi(clients["worker"])
    raw = {"_preload_content": False}  # the client still sends and reads; it skips building models
    count = 0

    def get(ref: tuple[str, str, str], name: str) -> dict[str, Any]:
        nonlocal count
        count += 1
        answer: dict[str, Any] = json.loads(
            worker.get_namespaced_custom_object(*ref[:2], ns, ref[2], name, **raw).data
        )
        return answer

    def patch(ref: tuple[str, str, str], name: str, body: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        try:
            _drain(worker.patch_namespaced_custom_object(*ref[:2], ns, ref[2], name, body, **raw))
        except client.ApiException as exc:
            if exc.status != 409:  # a controller wrote in between: the product re-reads; so do we
                raise

    web = get(DEPLOY, "web")
    get(STS, "db")
    volume = get(VR, "db-data")
    replicas = 2 if (web.get("spec") or {}).get("replicas") == 3 else 3
    patch(
        DEPLOY,
        "web",
        {"metadata": {"resourceVersion": web["metadata"]["resourceVersion"]}, "spec": {"replicas": replicas}},
    )
    state = "secondary" if volume["spec"].get("replicationState") == "primary" else "primary"
    patch(
        VR,
        "db-data",
        {
            "metadata": {"resourceVersion": volume["metadata"]["resourceVersion"]},
            "spec": {"replicationState": state},
        },
    )
    release = get(HR, "shop")
    stamp = f"{time.time():.6f}"
    patch(
        HR,
        "shop",
        {
            "metadata": {
                "resourceVersion": release["metadata"]["resourceVersion"],
                "annotations": {"reconcile.fluxcd.io/requestedAt": stamp},
            }
        },
    )
    get(FG, "shop")
    apps = client.AppsV1Api(clients["admin"])
    # Every answer is read to its end, as the product does, so the connection is reused.
    _drain(apps.read_namespaced_stateful_set_scale("cache", ns, **raw))
    scale = {"spec": {"replicas": rng.choice((1, 2))}}
    _drain(apps.patch_namespaced_stateful_set_scale("cache", ns, scale, **raw))
    jobs = client.BatchV1Api(clients["worker"])
    _drain(jobs.list_namespaced_job(ns, label_selector="app.kubernetes.io/name=report", **raw))
    return count + 3


def _watch(api: Any, stop: threading.Event, call: Callable[..., Any], **kwargs: Any) -> None:
    """Keep a watch open (renewed every few seconds) until ``stop``; events are read and dropped."""
    while not stop.is_set():
        try:
            response = call(
                watch=True, timeout_seconds=5, allow_watch_bookmarks=True, _preload_content=False, **kwargs
            )
            for _line in response.stream(decode_content=False):
                if stop.is_set():
                    break
            response.release_conn()
        except Exception:  # a watch cut by the end of the run
            time.sleep(0.1)


def _client_main(job: dict[str, Any], queue: Any) -> None:
    """One client process: ``job`` has kubeconfig, groups, requests, threads and seed."""
    from kubernetes import client, config

    kubeconfig, groups, requests, threads, seed = (
        job[k] for k in ("kubeconfig", "groups", "requests", "threads", "seed")
    )

    def api(site: str, user: str) -> Any:
        path = kubeconfig if user == "worker" else f"{kubeconfig}.{user}"
        return config.new_client_from_config(config_file=path, context=site)

    stop = threading.Event()
    watchers = []
    for site in SITES:
        watcher = client.CustomObjectsApi(api(site, "watcher"))
        admin = client.AppsV1Api(api(site, "admin"))
        watchers.append(
            threading.Thread(
                target=_watch,
                args=(watcher, stop, watcher.list_cluster_custom_object),
                kwargs={"group": "crd.hahomelabs.com", "version": "v1alpha1", "plural": "failovers"},
                daemon=True,
            )
        )
        watchers.append(
            threading.Thread(
                target=_watch,
                args=(admin, stop, admin.list_deployment_for_all_namespaces),
                kwargs={"label_selector": "app.kubernetes.io/name=web"},
                daemon=True,
            )
        )
    for thread in watchers:
        thread.start()
    per_thread = requests // threads
    done: list[int] = []

    def drive(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        clients = {site: {"worker": api(site, "worker"), "admin": api(site, "admin")} for site in SITES}
        made = 0
        while made < per_thread:
            made += _iteration(clients[rng.choice(SITES)], rng, groups)
        done.append(made)

    started = time.monotonic()
    workers = [threading.Thread(target=drive, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    stop.set()
    queue.put((sum(done), elapsed))


# --- one configuration --------------------------------------------------------------------------------


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _self_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _write_admin_kubeconfig(fleet: SandboxFleet) -> None:
    from sandbox.kube.fleet import write_kubeconfig

    write_kubeconfig(list(fleet), fleet.kubeconfig_path.with_name("kubeconfig.admin"), user="admin")


def run_config(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    processes = name == "processes"
    options: dict[str, Any] = {}
    if name == "passes":
        options["full_passes"] = True
    started = time.monotonic()
    if processes:
        from sandbox.kube.process import ProcessCluster  # here: the benchmark also runs on older sandboxes

        fleet = SandboxFleet(
            list(SITES), kubeconfig_path=tmp / name / "kubeconfig", processes=True, sample_groups=args.groups
        )
        fleet.clusters["site-b"] = ProcessCluster("site-b", sample_groups=args.groups, passive=True)
        fleet.start()
    else:
        fleet = SandboxFleet(list(SITES), kubeconfig_path=tmp / name / "kubeconfig", **options)
        fleet.start()
        populate(fleet["site-a"], args.groups, active=True)
        populate(fleet["site-b"], args.groups, active=False)
    _write_admin_kubeconfig(fleet)
    loaded = time.monotonic() - started

    def cpu() -> float:
        return sum(c.cpu_seconds() for c in fleet) if processes else _self_cpu()

    def rss() -> int:
        return sum(c.rss_bytes() for c in fleet) if processes else _self_rss()

    try:
        time.sleep(args.settle)
        before = cpu()
        time.sleep(args.idle)
        idle = (cpu() - before) / args.idle
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        per_client = args.requests // args.clients
        clients = [
            context.Process(
                target=_client_main,
                args=(
                    {
                        "kubeconfig": str(fleet.kubeconfig_path),
                        "groups": args.groups,
                        "requests": per_client,
                        "threads": args.threads,
                        "seed": seed,
                    },
                    queue,
                ),
            )
            for seed in range(args.clients)
        ]
        for process in clients:
            process.start()
        time.sleep(3.0)  # the clients import and connect; not counted
        before = cpu()
        load_started = time.monotonic()
        results = [queue.get() for _ in clients]
        for process in clients:
            process.join()
        load_cpu = cpu() - before
        wall = time.monotonic() - load_started
        requests = sum(r[0] for r in results)
        elapsed = max(r[1] for r in results)
        memory = rss()
    finally:
        fleet.stop()
    return {
        "load_s": loaded,
        "idle_cpu": idle,
        "rps": requests / elapsed,
        "cpu_per_1000": load_cpu / requests * 1000,
        "load_cpu_share": load_cpu / wall,
        "rss_mib": memory / 2**20,
        "requests": requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000, help="sample groups per cluster")
    parser.add_argument("--requests", type=int, default=4000, help="requests in the load phase")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=3, help="threads per client process")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle measurement")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before measuring idle")
    parser.add_argument("--configs", default="passes,events,processes")
    args = parser.parse_args()
    import tempfile

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            results[name] = run_config(name, args, Path(tmp))
            r = results[name]
            print(
                f"{name:10s}: loaded in {r['load_s']:5.1f} s; "
                f"idle CPU {r['idle_cpu'] * 100:5.1f} % of a core; "
                f"{r['rps']:6.0f} requests/s; {r['cpu_per_1000']:5.2f} CPU-s per 1,000 requests "
                f"({r['load_cpu_share'] * 100:.0f} % of a core under load); RSS {r['rss_mib']:.0f} MiB",
                flush=True,
            )
    print(f"({args.groups} groups per cluster, two clusters, {args.clients}x{args.threads} client threads)")


if __name__ == "__main__":
    main()
