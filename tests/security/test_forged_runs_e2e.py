"""The attack of issue 12, point 1, done exactly through Redis on the real stack.

A real Celery worker with the production adapters, real Redis, DynamoDB on moto, two sandbox clusters
with the sample group "shop" (site-a active) and one more Deployment, ``victim/critical`` (3 replicas),
in no group. The attacker can write the broker's Redis but has no run key: they write a run value
straight into the store's key and queue ``failover.start`` for it. Nothing may change: no object, no
owner, no history, no lock; the worker logs ``security.forged_run`` once and counts it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from fsm.run import Resources, Run, new_run
from sandbox.redis_server import free_port
from sandbox.stack import SANDBOX_RUN_KEY
from tests.chaos.conftest import SHOP, TIMING, ChaosStack, make_stack  # noqa: F401 (the fixture)
from tests.factories import failover
from tests.security.sealed import fields_of, sealed_value
from tests.waiting import wait_for_run
from workers.messages import START_TASK
from workers.store import RunStore
from workers.trust import RunSigner

pytestmark = pytest.mark.e2e

VICTIM = {"kind": "Deployment", "namespace": "victim", "name": "critical"}
NEW_KEY = "the-run-key-after-rotation"


def victim_deployment() -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "critical"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "critical", "namespace": "victim", "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "critical", "image": "example/critical:1"}]},
            },
        },
    }


def replicas(stack: ChaosStack, cluster: str, namespace: str, name: str) -> int:
    replicas: int = stack.fleet[cluster].store.get("Deployment", namespace, name)["spec"]["replicas"]
    return replicas


def with_metrics(make: Callable[..., ChaosStack], tmp_path: Path) -> tuple[ChaosStack, int]:
    """The stack, the victim Deployment on site-a, and a worker serving /metrics on the returned port."""
    port = free_port()
    stack = make(metrics_port=port)
    stack.fleet["site-a"].store.put(victim_deployment())
    (tmp_path / "prometheus").mkdir()
    stack.env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    return stack, port


def forged_total(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    found = re.search(r"^failover_forged_runs_total ([0-9.e+]+)$", body, re.M)
    return float(found.group(1)) if found else 0.0


def refused(stack: ChaosStack, port: int, timeout: float = 30.0) -> str:
    """Wait until the worker refused the run (logged and counted), then a little more for anything it
    might still do; returns the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "security.forged_run" in stack.worker_logs() and forged_total(port) >= 1:
            break
        time.sleep(0.1)
    time.sleep(2.0)  # a worker that acted would have started its lock, its first step, its next message
    return stack.worker_logs()


def unchanged(stack: ChaosStack, port: int, logs: str, run_id: str) -> None:
    assert replicas(stack, "site-a", "victim", "critical") == 3
    assert replicas(stack, "site-a", "shop", "web") == 3
    assert stack.coordination.active_cluster(SHOP) == "site-a"
    assert stack.coordination.lock_info(SHOP) is None
    assert stack.history() == []
    events = [line for line in logs.splitlines() if "security.forged_run" in line]
    assert len(events) == 1 and run_id in events[0], events
    assert "critical" not in logs, "the payload is never logged"
    assert "run.decided" not in logs and "step." not in logs
    assert forged_total(port) == 1.0


def store_raw(client: redis.Redis, stack: ChaosStack, run_id: str, document: dict[str, Any]) -> None:
    client.hset(f"{stack.settings.key_prefix}run:{run_id}", mapping={"v": 1, "d": json.dumps(document)})


def test_a_run_crafted_in_redis_and_its_start_message_change_nothing(
    make_stack: Callable[..., ChaosStack],  # noqa: F811
    real_redis: redis.Redis,
    tmp_path: Path,
) -> None:
    stack, port = with_metrics(make_stack, tmp_path)
    stack.start_worker("w1")
    # What the attacker writes: a run of the group "shop" whose workloads are victim/critical, from
    # site-a to site-b, pinned to its own resources (anyone can compute a digest; nobody a MAC).
    run_id = f"forged-{uuid.uuid4().hex[:6]}"
    genuine = new_run(
        run_id=run_id, failover=failover(), group=stack.group, source_cluster="site-a", now=time.time()
    )
    document = genuine.model_dump(mode="json")
    resources = Resources.model_validate({"workloads": [VICTIM]})
    document["resources"] = resources.model_dump(mode="json")
    document["pin"] = {"uid": None, "generation": None, "digest": resources.digest()}
    store_raw(real_redis, stack, run_id, document)
    before = real_redis.hgetall(f"{stack.settings.key_prefix}run:{run_id}")

    stack.engine.sender.send(START_TASK, run_id, 0, countdown=0.0, cluster=None)

    logs = refused(stack, port)
    unchanged(stack, port, logs, run_id)
    assert real_redis.hgetall(f"{stack.settings.key_prefix}run:{run_id}") == before


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda d: d["resources"]["workloads"].append(VICTIM), id="resources"),
        pytest.param(lambda d: d.update(target_cluster="site-a", source_cluster="site-b"), id="target"),
    ],
)
def test_a_valid_run_altered_in_redis_is_refused_and_changes_nothing(
    make_stack: Callable[..., ChaosStack],  # noqa: F811
    real_redis: redis.Redis,
    tmp_path: Path,
    alter: Callable[[dict[str, Any]], None],
) -> None:
    stack, port = with_metrics(make_stack, tmp_path)
    stack.start_worker("w1")
    run = new_run(
        run_id=f"altered-{uuid.uuid4().hex[:6]}",
        failover=failover(),
        group=stack.group,
        source_cluster="site-a",
        now=time.time(),
        timing=TIMING,
    )
    assert stack.store.create(run)  # genuine, sealed with the key; its message not sent yet
    key = f"{stack.settings.key_prefix}run:{run.run_id}"
    document = fields_of(real_redis.hget(key, "d") or b"")
    alter(document)  # the MAC stays the genuine run's
    real_redis.hset(key, "d", sealed_value(document))

    stack.engine.sender.send(START_TASK, run.run_id, 0, countdown=0.0, cluster=None)

    logs = refused(stack, port)
    unchanged(stack, port, logs, run.run_id)


def test_after_a_key_rotation_a_run_sealed_with_the_previous_key_runs_and_is_sealed_with_the_new(
    make_stack: Callable[..., ChaosStack],  # noqa: F811
    real_redis: redis.Redis,
) -> None:
    stack = make_stack()
    stack.env.update({"FAILOVER_RUN_KEY": NEW_KEY, "FAILOVER_RUN_KEY_PREVIOUS": SANDBOX_RUN_KEY})
    stack.start_worker("w1")
    run_id = stack.submit("CONSISTENCY", "site-a", "site-b", "rotated")  # sealed with the old key
    rotated = RunStore(
        real_redis, signer=RunSigner(NEW_KEY, SANDBOX_RUN_KEY), prefix=stack.settings.key_prefix
    )

    final = wait_for_run(rotated, run_id, lambda r: r.terminal, timeout=90, logs=[stack.tmp_path / "w1.log"])

    assert final.status.value == "SUCCESS", final.message
    assert stack.coordination.active_cluster(SHOP) == "site-b"
    new_only = RunStore(real_redis, signer=RunSigner(NEW_KEY), prefix=stack.settings.key_prefix)
    stored: Run | None = new_only.load(run_id)
    assert stored is not None and stored.version == final.version
    assert "security.forged_run" not in stack.worker_logs()
