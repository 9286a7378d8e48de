"""A worker frozen mid-write (SIGSTOP: a paused VM, a long GC pause) wakes up after newer runs took
its group: its stale write must be refused, by the clusters' fence (deploy/fencing, enforced by the
sandbox's admission) or by its own lease, and it must undo nothing.

W1 runs an UPTIME site-a -> site-b and is frozen while its first write of promote_volumes (a PATCH of
a VolumeReplication on site-b) is on its way: the sandbox's API server holds that request until the
test lets it through, as a slow network would. Once W1's lease has run out, W2 runs newer failovers
to SUCCESS; then the held request reaches the server, W1 is resumed and carries on where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from fsm.plan import Step
from fsm.run import RunStatus, Superseded
from tests.chaos.checks import assert_only_active, eventually
from tests.chaos.conftest import FENCED, SHOP, ChaosStack
from tests.chaos.monitor import ZERO_SERVING

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

Move = tuple[str, str, str]  # (mode, source, target)


def _freeze_w1_in_promotion(stack: ChaosStack) -> tuple[str, int]:
    """Start W1 on an UPTIME site-a -> site-b and freeze it with its promotion write held; wait until
    its lease has run out. The run id and its fencing token."""
    w1 = stack.start_worker("w1")
    gate = stack.gate("site-b", "patch", "volumereplications")
    stale = stack.submit("UPTIME", "site-a", "site-b", "uptime-to-b")
    assert gate.arrived.wait(30), stack.worker_logs()[-4000:]
    w1.pause()
    run = stack.store.load(stale)
    assert run is not None and run.state is Step.PROMOTE_VOLUMES and run.token is not None
    # Past W1's lease: nobody renews it while W1 is frozen.
    eventually(
        lambda: (lock := stack.coordination.lock_info(SHOP)) is None or lock.expires_at < time.time() - 0.5,
        "W1's lease expired",
        timeout=3 * stack.settings.lease_seconds,
    )
    return stale, run.token


def _run_newer(stack: ChaosStack, moves: list[Move]) -> None:
    stack.start_worker("w2")
    for index, (mode, source, target) in enumerate(moves):
        name = f"{mode.lower()}-{index}-to-{target}"
        # A CONSISTENCY run's downtime is planned: from its start to its end.
        with stack.monitor.window(ZERO_SERVING, name):
            run = stack.finish(stack.submit(mode, source, target, name))
        assert run.status is RunStatus.SUCCESS, run.message


def _wake_w1(stack: ChaosStack, stale: str) -> None:
    """Let the held request reach its server, then resume W1; its run must end superseded."""
    for gate in stack.gates:
        gate.release()
    time.sleep(0.3)  # the server answers the held request while W1 is still frozen
    stack.workers[0].resume()
    run = stack.finish(stale)
    assert run.status is RunStatus.FAILED, run.message
    assert run.failure is not None and run.failure.step is Step.PROMOTE_VOLUMES, run.message
    assert run.failure.superseded in (Superseded.FENCED, Superseded.LEASE_LOST), run.message
    # Nothing undone: the only compensation is the record of the failure.
    assert [action.step for action in run.compensation] == [Step.ABORT], run.compensation
    assert [key for key in run.steps if key.startswith("undo:")] == ["undo:0:abort"], list(run.steps)
    assert not run.diverged
    [record] = stack.history(stale)
    assert record.outcome in ("FENCED", "FAILED"), record
    time.sleep(0.5)  # a last look for any late write the stale run might still make


def _scenario(
    stack: ChaosStack, moves: list[Move], final: str, clusters: int, *, fenced: bool = True
) -> None:
    stale, token = _freeze_w1_in_promotion(stack)
    _run_newer(stack, moves)
    newest = stack.history()[0]
    assert newest.outcome == "SUCCESS"
    _wake_w1(stack, stale)
    stack.monitor.stop()
    assert stack.monitor.violations == [], stack.monitor.report()
    assert stack.monitor.samples > 50, stack.monitor.report()
    assert stack.coordination.active_cluster(SHOP) == final
    assert stack.coordination.divergence(SHOP) is None
    assert stack.coordination.lock_info(SHOP) is None
    assert_only_active(stack.fleet, final)
    assert len(stack.fleet) == clusters
    if not fenced:
        return
    # The cluster itself refused the stale write: the fence, not luck, kept the volume secondary.
    assert stack.refusals, "no write was refused with 'fenced:' by any sandbox cluster"
    assert any(f"epoch {token} " in refusal for refusal in stack.refusals), stack.refusals
    assert FENCED in stack.workers[0].log_path.read_text(errors="replace")


# The scenario is a stale writer, not recovery: the workers' crash-recovery sweep would see W1's
# heartbeat stop while it is frozen and hand W1's own step to W2, which would then carry W1's run on
# under its (still unclaimed) lock. That path is tested in tests/chaos_recovery; here W1 must wake up
# to a group that someone else has taken.
STALE_WRITER: dict[str, Any] = {"recovery_thread": False}


def test_a_paused_worker_two_clusters(make_stack: Callable[..., ChaosStack]) -> None:
    """W2 moves the group to site-b and back to site-a (CONSISTENCY) while W1 is frozen; W1's
    promotion of site-b's volume must not land: site-a alone active, never two primaries.

    W2 changed site-b's volume meanwhile, so W1's held write answers 409 and W1 re-reads; its retry is
    then stopped by whichever defence comes first, its lease guard (checked before every write
    attempt) or the cluster's fence. The three-cluster scenario is the one where only the fence can
    stop it (nothing changes the object under W1's feet)."""
    stack = make_stack(("site-a", "site-b"), **STALE_WRITER)
    moves = [("CONSISTENCY", "site-a", "site-b"), ("CONSISTENCY", "site-b", "site-a")]
    _scenario(stack, moves, final="site-a", clusters=2, fenced=False)


def test_a_paused_worker_three_clusters(make_stack: Callable[..., ChaosStack]) -> None:
    """W2 moves the group site-a -> site-c (it never touches site-b's objects, but raises site-b's
    fence); W1's promotion on site-b must be refused: never site-b and site-c primary together."""
    stack = make_stack(("site-a", "site-b", "site-c"), **STALE_WRITER)
    _scenario(stack, [("CONSISTENCY", "site-a", "site-c")], final="site-c", clusters=3)


def test_a_paused_worker_is_stopped_by_its_lease_without_the_fence(
    make_stack: Callable[..., ChaosStack],
) -> None:
    """Defence in depth: the same two-cluster scenario on clusters without deploy/fencing's policies
    must still end with the stale run superseded (lease lost) and its write not landed."""
    stack = make_stack(("site-a", "site-b"), fencing=False, **STALE_WRITER)
    moves = [("CONSISTENCY", "site-a", "site-b"), ("CONSISTENCY", "site-b", "site-a")]
    _scenario(stack, moves, final="site-a", clusters=2, fenced=False)
