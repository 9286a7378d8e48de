"""A message reserved behind a hung step is not stranded there (``FAILOVER_PREFETCH_MULTIPLIER`` 2).

With prefetch 2 (the default), a worker of one slot takes a second message from the broker while its
step runs, so that the next step is at hand when the first ends. If that step hangs (an API server
that holds a request), the reserved message waits behind it: no other worker can take it, since the
broker has handed it out. The overdue sweep must send it again once it has been due for
``schedule_to_start`` while another worker had a free slot, and the copy left behind must do nothing
when the hung worker finally reaches it.

W1 (one slot) runs a CONSISTENCY failover of group A ("shop") and hangs in its first write: the
sandbox's API server holds W1's PATCH of an Ingress on site-a. Then group B's failover is submitted:
W1's main process reserves its first message (the queue is empty, the broker's unacked hash holds two
messages, and B does not move). W2 starts; the sweep re-sends B's message, W2 runs B to SUCCESS while
W1 still hangs. The held request is then let through: A finishes, and W1's reserved copy of B's start
message reaches a finished run and is ignored (``event.ignored``: before the fix in the same commit,
that log line raised a TypeError and failed the task).

Asserted throughout: never two primaries in any namespace (:class:`SiteMonitor`), and group A never
without a serving site outside its own planned CONSISTENCY downtime (:class:`FleetMonitor`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from fsm.models import FailoverGroup
from fsm.run import RunStatus
from sandbox.kube.samples import load_sample_copies
from tests.chaos.checks import eventually
from tests.chaos.conftest import SHOP, ChaosStack
from tests.chaos.monitor import ZERO_SERVING, SiteMonitor

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

# A held request outlasts the scenario: one attempt of a Kubernetes request waits this long for its
# answer (the default, 15 s, could let W1 give up and retry while B is still on its way on a loaded
# machine; the retry would pass the gate and end the hang early).
HELD_READ = {"kube_read_timeout": 50.0, "kube_retry_seconds": 55.0}


def _group_b(stack: ChaosStack) -> FailoverGroup:
    """A second group (a copy of the sample in namespace ``b-0000``), active on site-a."""
    for cluster in stack.fleet:
        [namespace] = load_sample_copies(cluster, 1, active=cluster.name == "site-a", prefix="b-")
    group = FailoverGroup.model_validate(stack.fleet["site-a"].store.get("FailoverGroup", namespace, "shop"))
    stack.coordination.set_initial_owner(group.key, "site-a")
    return group


def _lines(stack: ChaosStack, event: str, run_id: str) -> list[str]:
    return [line for line in stack.worker_logs().splitlines() if event in line and run_id in line]


def _reserved_by_w1(stack: ChaosStack, client: redis.Redis, b: str) -> None:
    """B's first message sits in W1's prefetch: not in the queue, handed out (unacknowledged), and
    B has not moved for a second and a half."""
    prefix = stack.settings.broker_prefix
    eventually(lambda: client.hlen(f"{prefix}unacked") == 2, "A's step and B's message both handed out")
    before = stack.store.load(b)
    time.sleep(1.5)
    after = stack.store.load(b)
    assert before is not None and after is not None
    assert client.llen(stack.settings.queue) == 0, "B's message is still queued, not reserved"
    assert (after.state_name, after.started_at) == (before.state_name, before.started_at), after
    assert not after.steps, f"B ran a step while W1 hung: {list(after.steps)}"


def test_a_message_reserved_behind_a_hung_step_is_sent_again_to_a_free_worker(
    make_stack: Callable[..., ChaosStack], real_redis: redis.Redis
) -> None:
    stack = make_stack(("site-a", "site-b"), **HELD_READ)
    group_b = _group_b(stack)
    site = SiteMonitor(list(stack.fleet))
    site.start()
    try:
        stack.start_worker("w1")
        gate = stack.gate("site-a", "patch", "ingresses")
        with stack.monitor.window(ZERO_SERVING, "A's CONSISTENCY run"):
            a = stack.submit("CONSISTENCY", "site-a", "site-b", "a-hangs")
            assert gate.arrived.wait(30), stack.worker_logs()[-4000:]
            b = stack.submit("CONSISTENCY", "site-a", "site-b", "b-waits", group=group_b)
            _reserved_by_w1(stack, real_redis, b)

            stack.start_worker("w2")
            run_b = stack.finish(b, timeout=40)
            assert run_b.status is RunStatus.SUCCESS, run_b.message
            hung = stack.store.load(a)
            assert hung is not None and not hung.terminal, "A must still hang on its held request"
            redriven = _lines(stack, "run.redriven", b)
            assert any("had a free slot" in line for line in redriven), redriven

            gate.release()
            run_a = stack.finish(a, timeout=60)
        assert run_a.status is RunStatus.SUCCESS, run_a.message
        # W1 reaches its reserved copy of B's start message once A's step is over: B has finished, so
        # the start is ignored (``event.ignored``), and nothing is written.
        eventually(
            lambda: [line for line in _lines(stack, "event.ignored", b) if "start ignored" in line],
            "W1 reached its reserved copy of B's start message and ignored it",
        )
        time.sleep(0.5)  # a last look for a late write
    finally:
        site.stop()
    _assert_end(stack, group_b, a, b, site)


def _assert_end(stack: ChaosStack, group_b: FailoverGroup, a: str, b: str, site: SiteMonitor) -> None:
    stack.monitor.stop()
    assert stack.monitor.violations == [], stack.monitor.report()
    assert site.violations == [], [str(v) for v in site.violations]
    assert site.samples > 20 and stack.monitor.samples > 20
    for key, run_id in ((SHOP, a), (group_b.key, b)):
        assert stack.coordination.active_cluster(key) == "site-b"
        assert stack.coordination.lock_info(key) is None
        records = stack.coordination.history(key, limit=10)
        assert [(r.run_id, r.outcome) for r in records] == [(run_id, "SUCCESS")], records
    # Every step of B ran on W2: W1 logged no line of B's while running one of its steps (each such
    # line names the step). W1's main process did send B's message again (its sweep).
    w1 = stack.workers[0].log_path.read_text(errors="replace").splitlines()
    assert not [line for line in w1 if b in line and "step=" in line], "W1 ran a step of B"
