"""A permanent fault past the point of no return: the run undoes nothing and records the group as
diverged; the health checker then leaves the group alone (no automatic failover, no stand-down of
the site that serves) until an operator settles it with ``failoverctl group resolve``.

UPTIME: site-a refuses the demotion of its volumes (RBAC forbids patching VolumeReplications), after
site-b already serves and site-a's network is off. CONSISTENCY: site-b refuses the scale-up of its
Deployment (RBAC forbids patching Deployments), after its volumes were promoted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fsm.autofailover import LABEL_AUTOMATIC, Action
from fsm.plan import Step
from fsm.run import RunStatus
from producers.health import HealthChecker
from producers.kube import connect
from sandbox.dynamo import dynamodb_client
from tests.chaos.checks import active_clusters, assert_only_active
from tests.chaos.conftest import OPERATOR, SHOP, ChaosStack
from tests.chaos.monitor import TWO_PRIMARIES, ZERO_SERVING
from workers.api import Orchestrator
from workers.dynamo import DynamoCoordination

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

# mode -> (cluster, verb, resource of the fault), the failed step, what the monitor must allow while
# the group is diverged, the site that serves (or holds the data) and is chosen to resolve.
CASES = {
    "UPTIME": (("site-a", "patch", "volumereplications"), Step.DEMOTE_VOLUMES, TWO_PRIMARIES),
    "CONSISTENCY": (("site-b", "patch", "deployments"), Step.SCALE_UP_WORKLOADS, ZERO_SERVING),
}
PASSES = 30  # health checker passes, one simulated second apart


def _automatic_failovers(stack: ChaosStack) -> list[str]:
    found = []
    for cluster in stack.fleet:
        items, _ = cluster.store.list("Failover", "shop", label_selector=f"{LABEL_AUTOMATIC}=true")
        found.extend(f"{cluster.name}: {item['metadata']['name']}" for item in items)
    return found


def _health_checker_passes(stack: ChaosStack, serving: list[str]) -> None:
    """~30 s of health checker passes on the diverged group: it must change nothing."""
    table = stack.settings.dynamodb_table
    assert stack.settings.dynamodb_endpoint_url is not None
    coordination = DynamoCoordination(table, client=dynamodb_client(stack.settings.dynamodb_endpoint_url))
    orchestrator = Orchestrator(stack.settings, coordination=coordination)
    clients = connect(stack.fleet.kubeconfig_for("health-checker"), request_timeout=2.0)
    try:
        checker = HealthChecker(orchestrator, clients, operator_id=OPERATOR, cooldown=600.0)
        start = time.time()
        for n in range(PASSES):
            [outcome] = checker.run_once(start + n)
            assert outcome.decision.action is not Action.FAILOVER, outcome.decision
            assert outcome.created is None and outcome.stood_down == (), outcome
            assert not any(d.stand_down for d in outcome.stand_downs), outcome.stand_downs
            assert active_clusters(stack.fleet) == serving
    finally:
        for client in clients.values():
            client.close()
        orchestrator.close()
    assert _automatic_failovers(stack) == []
    assert stack.coordination.divergence(SHOP) is not None
    assert all(r.kind.value != "STANDDOWN" for r in stack.store.recent(50))


@pytest.mark.parametrize("mode", ["UPTIME", "CONSISTENCY"])
def test_a_failure_past_the_point_of_no_return(make_stack: Callable[..., ChaosStack], mode: str) -> None:
    (where, verb, resource), failed_step, allowed = CASES[mode]
    stack = make_stack()
    stack.start_worker("w1")
    stack.fleet[where].faults.forbid(verb, resource)
    # UPTIME: two primaries by design from the promotion on site-b to the demotion on site-a, which
    # never comes, so until the resolution. CONSISTENCY: downtime planned from the run's start, which
    # the failure makes last until the resolution.
    stack.monitor.open(allowed, "the run, then the divergence until it is resolved")
    run_id = stack.submit(mode, "site-a", "site-b", f"{mode.lower()}-to-b")
    run = stack.finish(run_id)

    assert run.status is RunStatus.FAILED, run.message
    assert run.failure is not None and run.failure.step is failed_step, run.message
    assert "point of no return" in run.message and "failoverctl group resolve shop/shop" in run.message
    assert [action.step for action in run.compensation] == [Step.ABORT]
    divergence = stack.coordination.divergence(SHOP)
    assert divergence is not None and divergence.run_id == run_id, divergence
    [record] = stack.history(run_id)
    assert (record.outcome, record.failed_step) == ("FAILED", failed_step.value)
    assert stack.coordination.active_cluster(SHOP) == "site-a"  # no owner flip without completion
    serving = ["site-b"] if mode == "UPTIME" else []
    assert active_clusters(stack.fleet) == serving

    _health_checker_passes(stack, serving)

    stack.fleet[where].faults.allow(verb, resource)
    started = time.monotonic()
    result = stack.cli("group", "resolve", "shop/shop", "--active", "site-b", "--reason", "test", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr + stack.worker_logs()[-4000:]
    assert "settled: site-b is the active cluster" in result.stdout, result.stdout
    resolve_seconds = time.monotonic() - started
    stack.monitor.close(allowed, "the run, then the divergence until it is resolved")

    assert_only_active(stack.fleet, "site-b")
    assert stack.coordination.divergence(SHOP) is None
    assert stack.coordination.active_cluster(SHOP) == "site-b"
    assert stack.coordination.lock_info(SHOP) is None
    assert [h.outcome for h in stack.history()] == ["RESOLVED", "FAILED"]
    time.sleep(0.3)
    stack.monitor.stop()
    assert stack.monitor.violations == [], stack.monitor.report()
    assert resolve_seconds < 60
