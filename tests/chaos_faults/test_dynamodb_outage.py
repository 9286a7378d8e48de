"""DynamoDB unreachable for 60 s in the middle of runs (issue 11), with the production timing and a
lease of 90 s: a run stops acting while its lease cannot be confirmed, resumes when DynamoDB answers
if its lock is still its own, and ends superseded, undoing nothing, if it is not.

Three stacks share one outage: a CONSISTENCY run and an UPTIME run that must finish, and a run whose
lock another holder takes while DynamoDB is unreachable for it. The workers reach a moto server of
this test's own through a TCP proxy that the test switches off; the test itself talks to moto
directly (the other site, for which DynamoDB still answers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.plan import Step, Timing
from fsm.run import Run, RunStatus, Superseded
from sandbox.dynamo import SerializedMotoServer, endpoint_of, moto_server
from sandbox.kube import SandboxCluster
from tests.chaos_faults.conftest import ChaosStack, chaos_stack
from tests.chaos_faults.proxy import TcpProxy
from tests.kube.invariants import snapshot

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

OUTAGE = 60.0
GRACE = 3.0  # a step that renewed its lease just before the cut may still finish its writes
SETUP = ("validate", "acquire_lock", "raise_fence")


@pytest.fixture
def own_moto() -> Iterator[SerializedMotoServer]:
    with moto_server() as server:
        yield server


def _mid_run(run: Run) -> bool:
    """Holding its lock, with at least one effect on a cluster done."""
    done = [name for name, record in run.steps.items() if record.outcome == "done" and name not in SETUP]
    return run.token is not None and bool(done)


def _writes(cluster: SandboxCluster) -> dict[tuple[str, str], Any]:
    """What the orchestrator writes on the group's objects: specs and annotations."""
    return {
        key: (obj.get("spec"), obj["metadata"].get("annotations"))
        for key, obj in snapshot(cluster, "shop").items()
    }


def _errors(run: Run) -> int:
    return sum(record.errors for record in run.steps.values())


def test_dynamodb_unreachable_for_60s_mid_run(
    redis_server_url: str, real_redis: redis.Redis, tmp_path: Path, own_moto: SerializedMotoServer
) -> None:
    host, port = own_moto.get_host_and_port()
    with TcpProxy((host, port)) as proxy, ExitStack() as stacks:

        def make(name: str) -> ChaosStack:
            stack: ChaosStack = stacks.enter_context(
                chaos_stack(
                    name,
                    redis_url=redis_server_url,
                    real_redis=real_redis,
                    tmp_path=tmp_path,
                    dynamodb_endpoint=proxy.url,
                    direct_endpoint=endpoint_of(own_moto),
                    timing=Timing(),  # production deadlines, backoff and error budget
                    lease_seconds=90.0,
                    visibility_timeout=3600.0,
                    redrive_after=45.0,
                )
            )
            stack.start_worker()
            return stack

        resumed = {"CONSISTENCY": make("outage-c"), "UPTIME": make("outage-u")}
        robbed = make("outage-s")
        run_ids = {mode: stack.submit(mode) for mode, stack in resumed.items()}
        robbed_id = robbed.submit("CONSISTENCY")
        everyone = [*((stack, run_ids[mode]) for mode, stack in resumed.items()), (robbed, robbed_id)]
        started = time.monotonic()
        for stack, run_id in everyone:
            stack.wait_for(run_id, _mid_run, timeout=60)

        proxy.down()
        cut = time.monotonic()
        at_cut = {stack.name: stack.store.load(run_id) for stack, run_id in everyone}
        assert not any(run is None or run.terminal for run in at_cut.values()), at_cut
        time.sleep(GRACE)
        before = {(s.name, c.name): _writes(c) for s, _ in everyone for c in s.fleet}
        # Meanwhile an operator releases the robbed run's lock and another run takes the group,
        # where DynamoDB still answers.
        lock = robbed.coordination.lock_info(robbed.group.key)
        assert lock is not None
        assert robbed.coordination.release_lock(robbed.group.key, token=lock.token)
        thief = robbed.coordination.acquire_lock(
            robbed.group.key, holder="another-site", run_id="thief", lease_seconds=600, now=time.time()
        )
        time.sleep(max(0.0, cut + OUTAGE - time.monotonic()))
        after = {(s.name, c.name): _writes(c) for s, _ in everyone for c in s.fleet}
        progress = {s.name: (s.store.load(r) or at_cut[s.name]).state_name for s, r in everyone}  # type: ignore[union-attr]
        proxy.up()
        back = time.monotonic()

        # Nobody wrote to any cluster while its lease could not be confirmed.
        assert after == before

        finished = {mode: stack.wait_finished(run_ids[mode], timeout=120) for mode, stack in resumed.items()}
        robbed_run = robbed.wait_finished(robbed_id, timeout=120)
        print(f"\n[chaos] DynamoDB unreachable for {back - cut:.0f}s (production timing, lease 90s)")
        for mode, run in finished.items():
            stack = resumed[mode]
            cut_at = at_cut[stack.name]
            assert cut_at is not None
            took = (run.finished_at or 0) - (run.started_at or 0)
            print(
                f"[chaos]   {mode}: {run.status.value} in {took:.0f}s, finished "
                f"{(run.finished_at or 0) - (time.time() - (time.monotonic() - back)):.0f}s after DynamoDB "
                f"came back; cut at {cut_at.state_name}, at {progress[stack.name]} when it came back; "
                f"step attempts failed temporarily {_errors(run)}; DynamoDB requests retried "
                f"{stack.logged('dynamodb_call_retrying')}"
            )
            assert run.status is RunStatus.SUCCESS, run.message
            assert stack.owner() == "site-b"
        print(
            f"[chaos]   lock taken over during the outage: {robbed_run.status.value}, "
            f"{robbed_run.message} (superseded: {robbed_run.failure and robbed_run.failure.superseded})"
        )
        print(f"[chaos]   wall time from submit {time.monotonic() - started:.0f}s")

        assert robbed_run.status is RunStatus.FAILED
        assert robbed_run.failure is not None and robbed_run.failure.superseded is Superseded.LEASE_LOST
        assert [action.step for action in robbed_run.compensation] == [Step.ABORT]  # nothing undone
        assert robbed_run.token is not None and thief.token > robbed_run.token
        # What it did before the outage stays done: the source's network is still off.
        ingress = robbed.fleet["site-a"].store.get("Ingress", "shop", "web")
        assert ingress["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/controller"] == "ignore"
        assert robbed.owner() == "site-a"
