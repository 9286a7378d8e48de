"""Many workers racing for many groups' locks: one winner per group, tokens only ever grow."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from fsm.models import GroupKey
from workers.dynamo import DynamoCoordination
from workers.errors import LockHeld
from workers.ports import LockGrant

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 8
GROUPS = [GroupKey(operator_id="op-1", namespace="race", name=f"group-{i:02d}") for i in range(50)]
LEASE = 50.0


def _race(adapters: list[DynamoCoordination], now: float, label: str) -> dict[GroupKey, list[LockGrant]]:
    """Every worker tries every group at ``now``; returns the grants per group."""
    start = threading.Barrier(len(adapters))

    def contend(worker: int) -> tuple[list[tuple[GroupKey, LockGrant]], int]:
        # Half walk the groups forwards, half backwards: workers collide on the same group at once.
        order = GROUPS if worker % 2 == 0 else GROUPS[::-1]
        wins: list[tuple[GroupKey, LockGrant]] = []
        refused = 0
        start.wait(timeout=30)
        for group in order:
            try:
                grant = adapters[worker].acquire_lock(
                    group, holder=f"worker-{worker}", run_id=f"{label}-{worker}", lease_seconds=LEASE, now=now
                )
            except LockHeld:
                refused += 1
            else:
                wins.append((group, grant))
        return wins, refused

    with ThreadPoolExecutor(max_workers=len(adapters)) as pool:
        results = list(pool.map(contend, range(len(adapters))))
    grants: dict[GroupKey, list[LockGrant]] = defaultdict(list)
    for wins, _ in results:
        for group, grant in wins:
            grants[group].append(grant)
    assert sum(refused for _, refused in results) == len(adapters) * len(GROUPS) - len(grants)
    return grants


def test_one_winner_per_group_and_strictly_increasing_tokens(
    make_adapter: Callable[..., DynamoCoordination],
) -> None:
    adapters = [make_adapter() for _ in range(WORKERS)]
    adapters[0].ensure_table()
    reader = adapters[0]
    tokens: dict[GroupKey, list[int]] = defaultdict(list)

    # Round 1 on fresh groups; round 2 once every lease has expired: a takeover race.
    for round_number, now in enumerate((1000.0, 1000.0 + 2 * LEASE), start=1):
        transactions_before = sum(a.calls["TransactWriteItems"] for a in adapters)
        grants = _race(adapters, now, f"round{round_number}")
        transactions = sum(a.calls["TransactWriteItems"] for a in adapters) - transactions_before

        # Losers got past the read and were stopped by the conditional write itself, not only by the read.
        assert transactions > len(GROUPS)
        assert set(grants) == set(GROUPS)
        for group in GROUPS:
            assert len(grants[group]) == 1, f"{group}: {grants[group]}"
            grant = grants[group][0]
            info = reader.lock_info(group)
            assert info is not None
            assert (info.holder, info.run_id, info.token) == (grant.holder, grant.run_id, grant.token)
            tokens[group].append(grant.token)

    # The round-2 winners release; whoever comes next still gets a larger token.
    for group in GROUPS:
        assert reader.release_lock(group, token=tokens[group][-1])
        grant = reader.acquire_lock(group, holder="late", run_id="round3", lease_seconds=LEASE, now=1500.0)
        tokens[group].append(grant.token)

    for group in GROUPS:
        assert tokens[group][0] < tokens[group][1] < tokens[group][2], f"{group}: tokens {tokens[group]}"
