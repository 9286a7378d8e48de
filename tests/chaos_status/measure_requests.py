"""Kubernetes requests per step message on the demo's real stack.

``python -m tests.chaos_status.measure_requests``.

Runs four failovers (CONSISTENCY and UPTIME, there and back) with one real worker and counts every
resource request on both sandbox clusters. Where the tree has the status reconciler, the watcher runs
beside the worker and writes the status (off the steps' path); on an older tree the worker's status
observer writes it inside every step. Prints the requests per step message, split into the steps' own
and the status writer's (Failovers and Events).
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sandbox.celery_worker import WorkerProcess
from sandbox.demo import _aws_env, _failover, _group, environment
from tests.chaos_status.harness import RequestTap
from workers.api import Orchestrator

STATUS_KINDS = ("failovers", "events")
WATCHER_READS = {("get", "failovergroups"), ("list", "failovergroups")}


def main() -> None:
    reconciled = importlib.util.find_spec("producers.failover_status") is not None
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp)) as world, ExitStack() as stack:
        taps = [RequestTap(c) for c in world.fleet]
        worker = WorkerProcess(world.env, name="m", queues=world.settings.queue, log_path=Path(tmp) / "w.log")
        stack.callback(worker.stop)
        worker.wait_ready()
        stack.enter_context(_aws_env(world.env))
        handle = stack.enter_context(Orchestrator(world.settings))
        if reconciled:
            from producers.kube import connect
            from producers.watcher import FailoverWatcher

            clients = connect(world.fleet.kubeconfig_for("watcher"), world.fleet.names)
            watcher = FailoverWatcher(
                handle, clients, operator_id=world.settings.operator_id, status_interval=1.0
            )
            stack.enter_context(watcher)
        group = _group(world.fleet)
        for tap in taps:
            tap.reset()
        tickets = 0
        for index, (mode, target) in enumerate(
            [("CONSISTENCY", "site-b"), ("UPTIME", "site-a"), ("UPTIME", "site-b"), ("CONSISTENCY", "site-a")]
        ):
            request = _failover(world.fleet, "site-a", f"measure-{index}", mode, target)
            run_id = handle.submit(request, group, failover_cluster="site-a").run.run_id
            while (run := handle.run(run_id)) is None or not run.terminal:
                time.sleep(0.1)
            tickets += run.tickets
        time.sleep(3)  # the last status pass
        counts = sum((t.counts for t in taps), start=type(taps[0].counts)())
        total = sum(counts.values())
        status = sum(n for (_verb, res), n in counts.items() if res.split("/")[0] in STATUS_KINDS)
        # With the reconciler, every Failover and Event request and the FailoverGroup reads are the
        # watcher's; without it, every request is the worker's (the test writes through the store).
        outside = status + sum(n for k, n in counts.items() if k in WATCHER_READS) if reconciled else 0
        print(f"tree: {'status reconciled by the watcher' if reconciled else 'status written by the worker'}")
        print(f"step messages: {tickets}; requests: {total}")
        print(f"requests inside steps: {(total - outside) / tickets:.2f} per message")
        per_failover = status / 4
        print(
            f"status requests (Failovers, Events): {status / tickets:.2f} per message, "
            f"{per_failover:.1f} per Failover"
        )
        print("by request:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
