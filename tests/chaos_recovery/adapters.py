"""The adapters the chaos-recovery workers load (``FAILOVER_ADAPTERS=tests.chaos_recovery.adapters:
chaos_adapters``): fake clusters in a Redis of their own (``FAILOVER_FAKE_REDIS_URL``), so that losing
or restarting the orchestrator's Redis does not lose the clusters, each write taking
``FAILOVER_CHAOS_WRITE_DELAY`` seconds (a step long enough to be killed in); the real DynamoDB adapter."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import redis

from fsm.models import ResourceRef
from sandbox.fakes import FakeClusters
from workers.container import Adapters, dynamo_coordination
from workers.ports import Change
from workers.settings import Settings


class SlowClusters(FakeClusters):
    def __init__(self, client: redis.Redis, prefix: str, *, settle_checks: int, delay: float) -> None:
        super().__init__(client, prefix, settle_checks=settle_checks)
        self.delay = delay

    def make_passive(
        self,
        cluster: str,
        ref: ResourceRef,
        *,
        epoch: int,
        group: str = "",
        before_write: Callable[[], None] | None = None,
    ) -> Change:
        time.sleep(self.delay)
        return super().make_passive(cluster, ref, epoch=epoch, group=group, before_write=before_write)


def chaos_adapters(settings: Settings) -> Adapters:
    client = redis.Redis.from_url(os.environ["FAILOVER_FAKE_REDIS_URL"])
    clusters = SlowClusters(
        client,
        os.environ["FAILOVER_FAKE_PREFIX"],
        settle_checks=int(os.environ.get("FAILOVER_FAKE_SETTLE_CHECKS", "2")),
        delay=float(os.environ.get("FAILOVER_CHAOS_WRITE_DELAY", "0")),
    )
    return Adapters(effects=clusters, coordination=dynamo_coordination(settings))
