"""``fsm.health`` and ``fsm.autofailover``: judging objects and deciding about automatic failover, pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from fsm.autofailover import Action, HealthInputs, decide_automatic_failover, is_automatic, next_error_since
from fsm.health import (
    ClusterRole,
    GroupHealth,
    Health,
    judge_group,
    judge_object,
    stale_clusters,
    unreachable,
    worst,
)
from fsm.models import FailoverGroup, FailoverMode
from tests.factories import SHOP_GROUP

P, S = ClusterRole.PRIMARY, ClusterRole.STANDBY
NOW = 10_000.0


@dataclass(frozen=True)
class Beat:
    cluster: str
    health: str
    at: float


def group(**spec: Any) -> FailoverGroup:
    return FailoverGroup.model_validate({**SHOP_GROUP, "spec": {**SHOP_GROUP["spec"], **spec}})


def workload(
    desired: int, ready: int, running: int | None = None, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "replicas": ready if running is None else running,
            "readyReplicas": ready,
            "observedGeneration": observed,
        },
    }


def volume(state: str, degraded: bool = False) -> dict[str, Any]:
    return {
        "status": {
            "state": state,
            "conditions": [
                {"type": "Degraded", "status": "True" if degraded else "False", "message": "lagging"}
            ],
        }
    }


def dns(value: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {"external-dns.alpha.kubernetes.io/controller": value}}}


def flux(suspend: bool, ready: str | None = "True") -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": ready, "message": "install failed"}] if ready else []
    return {"spec": {"suspend": suspend}, "status": {"conditions": conditions}}


@pytest.mark.parametrize(
    ("kind", "obj", "role", "health", "words"),
    [
        ("Deployment", workload(3, 3), P, Health.OK, "3/3 ready"),
        ("Deployment", workload(3, 1), P, Health.DEGRADED, "1/3 ready"),
        ("Deployment", workload(3, 0), P, Health.ERROR, "0/3 ready"),
        ("StatefulSet", workload(2, 2, generation=2, observed=1), P, Health.DEGRADED, "rolling out"),
        ("Deployment", workload(0, 0), P, Health.DEGRADED, "scaled to 0 on the primary"),
        ("Deployment", workload(0, 0), S, Health.OK, "passive"),
        ("StatefulSet", workload(0, 0, running=1), S, Health.DEGRADED, "scaling down: 1"),
        ("Deployment", workload(3, 3), S, Health.DEGRADED, "on a standby"),
        ("CronJob", {"spec": {"suspend": False}}, P, Health.OK, "scheduled"),
        ("CronJob", {"spec": {"suspend": True}}, P, Health.DEGRADED, "suspended on the primary"),
        ("CronJob", {"spec": {"suspend": True}}, S, Health.OK, "suspended"),
        (
            "CronJob",
            {"spec": {"suspend": True}, "status": {"active": [{}]}},
            S,
            Health.DEGRADED,
            "still running",
        ),
        ("CronJob", {"spec": {"suspend": False}}, S, Health.DEGRADED, "scheduled on a standby"),
        ("VolumeReplication", volume("Primary"), P, Health.OK, "primary"),
        ("VolumeReplication", volume("Primary", degraded=True), P, Health.DEGRADED, "lagging"),
        ("VolumeReplication", volume("Secondary"), P, Health.ERROR, "expected primary"),
        ("VolumeReplication", volume("Secondary"), S, Health.OK, "secondary"),
        ("VolumeReplication", volume("Primary"), S, Health.ERROR, "two writers"),
        ("Ingress", dns("dns-controller"), P, Health.OK, "published"),
        ("VirtualService", dns("ignore"), P, Health.DEGRADED, "expected 'dns-controller'"),
        ("VirtualService", dns("ignore"), S, Health.OK, "ignored"),
        ("HelmRelease", flux(False), P, Health.OK, "ready"),
        ("HelmRelease", flux(False, "False"), P, Health.DEGRADED, "install failed"),
        ("Kustomization", flux(True), P, Health.DEGRADED, "suspended on the primary"),
        ("HelmRelease", flux(True), S, Health.OK, "suspended"),
        ("HelmRelease", flux(False), S, Health.DEGRADED, "reconciling on a standby"),
        ("Deployment", None, P, Health.ERROR, "not found"),
        ("Deployment", None, S, Health.ERROR, "not found"),
    ],
)
def test_judge_object(
    kind: str, obj: dict[str, Any] | None, role: ClusterRole, health: Health, words: str
) -> None:
    judged, detail = judge_object(kind, obj, role)
    assert judged is health and words in detail


def test_a_group_is_as_healthy_as_its_worst_resource() -> None:
    g = group()
    objects = {ref: workload(1, 1) for ref in g.workload_refs()}
    judged = judge_group("site-a", g, objects, P)  # volumes, network and flux objects are missing
    assert judged.health is Health.ERROR
    assert "VolumeReplication/db-data: not found" in judged.detail
    assert judged.summary()["StatefulSet/db"] == "OK: 1/1 ready"
    assert worst([Health.OK, Health.DEGRADED]) is Health.DEGRADED and worst([]) is Health.OK


def test_stale_clusters_and_error_tracking() -> None:
    beats = [Beat("a", "OK", NOW - 61), Beat("b", "OK", NOW - 60), Beat("c", "OK", NOW)]
    assert stale_clusters(beats, NOW, 60) == ["a"]
    assert next_error_since(None, "ERROR", NOW) == NOW
    assert next_error_since(5.0, "ERROR", NOW) == 5.0
    assert next_error_since(5.0, "UNKNOWN", NOW) == 5.0
    assert next_error_since(5.0, "DEGRADED", NOW) is None
    assert is_automatic("automatic failover by the health checker: ...")
    assert is_automatic("", {"failover.hahomelabs.com/automatic": "true"})
    assert not is_automatic("drill")


def seen(cluster: str, health: Health = Health.OK, role: ClusterRole = S) -> GroupHealth:
    return (
        GroupHealth(cluster, role, health)
        if health is not Health.UNKNOWN
        else unreachable(cluster, role, "x")
    )


BASE = HealthInputs(
    group=group(),
    now=NOW,
    clusters=["site-a", "site-b", "site-c"],
    observations=[seen("site-a", role=P), seen("site-b"), seen("site-c")],
    heartbeats=[],
    active_cluster="site-a",
    watching_since=NOW - 3600,
)
A_DOWN = replace(
    BASE,
    observations=[seen("site-a", Health.UNKNOWN, P), seen("site-b"), seen("site-c")],
    heartbeats=[Beat("site-a", "OK", NOW - 61)],
)
A_ERROR = replace(
    BASE,
    observations=[seen("site-a", Health.ERROR, P), seen("site-b"), seen("site-c")],
    active_error_since=NOW - 120,
)

CASES: list[tuple[str, HealthInputs, Action, str, str | None, bool | None]] = [
    ("all fine", BASE, Action.HEARTBEAT, "site-a is OK, heartbeat 0s old", None, None),
    (
        "nobody answers",
        replace(BASE, observations=[seen("site-a", Health.UNKNOWN, P), seen("site-b", Health.UNKNOWN)]),
        Action.NOTHING,
        "no cluster answered",
        None,
        None,
    ),
    (
        "no owner",
        replace(A_DOWN, active_cluster=None),
        Action.HEARTBEAT,
        "no active cluster recorded",
        None,
        None,
    ),
    (
        "stale active",
        A_DOWN,
        Action.FAILOVER,
        "no heartbeat from the active cluster site-a for 61s",
        "site-b",
        True,
    ),
    (
        "heartbeat just within the timeout",
        replace(A_DOWN, heartbeats=[Beat("site-a", "OK", NOW - 60)]),
        Action.HEARTBEAT,
        "site-a is OK, heartbeat 60s old",
        None,
        None,
    ),
    (
        "never seen, watched long enough",
        replace(A_DOWN, heartbeats=[]),
        Action.FAILOVER,
        "since the checker started 3600s ago",
        "site-b",
        True,
    ),
    (
        "never seen, just started",
        replace(A_DOWN, heartbeats=[], watching_since=NOW - 10),
        Action.HEARTBEAT,
        "waiting for a first heartbeat",
        None,
        None,
    ),
    ("error long enough", A_ERROR, Action.FAILOVER, "has reported ERROR for 120s", "site-b", False),
    (
        "error not long enough",
        replace(A_ERROR, active_error_since=NOW - 119),
        Action.HEARTBEAT,
        "reports ERROR for 119s; automatic failover after timeouts.unhealthyPrimary (120s)",
        None,
        None,
    ),
    (
        "suspended",
        replace(A_DOWN, group=group(suspended=True, suspensionReason="upgrade")),
        Action.HEARTBEAT,
        "but the group is suspended (upgrade)",
        None,
        None,
    ),
    (
        "diverged: never automatic, the clusters contradict DynamoDB",
        replace(A_DOWN, diverged="run r1 failed past its point of no return"),
        Action.HEARTBEAT,
        "but the group is diverged (run r1 failed past its point of no return)",
        None,
        None,
    ),
    (
        "lock held",
        replace(A_DOWN, lock_holder="run-7"),
        Action.HEARTBEAT,
        "run run-7 holds the group's lock",
        None,
        None,
    ),
    (
        "automatic in flight",
        replace(A_DOWN, automatic_in_flight="shop/auto-shop-x"),
        Action.HEARTBEAT,
        "automatic Failover shop/auto-shop-x is already in flight",
        None,
        None,
    ),
    (
        "within the cool-down",
        replace(A_DOWN, last_automatic_at=NOW - 599),
        Action.HEARTBEAT,
        "last automatic failover was 599s ago (cool-down 600s)",
        None,
        None,
    ),
    (
        "after the cool-down",
        replace(A_DOWN, last_automatic_at=NOW - 600),
        Action.FAILOVER,
        "",
        "site-b",
        True,
    ),
    (
        "OK standby before DEGRADED",
        replace(A_DOWN, observations=[seen("site-b", Health.DEGRADED), seen("site-c")]),
        Action.FAILOVER,
        "site-c is the healthiest standby (OK",
        "site-c",
        True,
    ),
    (
        "DEGRADED standby when no OK one",
        replace(A_DOWN, observations=[seen("site-b", Health.DEGRADED), seen("site-c", Health.ERROR)]),
        Action.FAILOVER,
        "site-b is the healthiest standby (DEGRADED",
        "site-b",
        True,
    ),
    (
        "stale standby is no target",
        replace(
            A_DOWN,
            observations=[seen("site-b"), seen("site-c", Health.UNKNOWN)],
            heartbeats=[Beat("site-a", "OK", NOW - 61), Beat("site-c", "OK", NOW - 100)],
            clusters=["site-a", "site-c"],
        ),
        Action.FAILOVER,
        "site-b is the healthiest standby",
        "site-b",
        True,
    ),
    (
        "no fit standby",
        replace(A_DOWN, observations=[seen("site-b", Health.ERROR), seen("site-c", Health.UNKNOWN)]),
        Action.HEARTBEAT,
        "no standby can take over (site-b: ERROR; site-c: no heartbeat)",
        None,
        None,
    ),
]


Case = tuple[str, HealthInputs, Action, str, str | None, bool | None]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decide_automatic_failover(case: Case) -> None:
    _name, inputs, action, words, target, force = case

    decision = decide_automatic_failover(inputs)

    assert decision.action is action, decision.reason
    assert words in decision.reason
    assert {h.cluster for h in decision.heartbeats} == {o.cluster for o in inputs.observations if o.reachable}
    if target is None:
        assert decision.failover is None
        return
    assert decision.failover is not None
    assert (decision.failover.target_cluster, decision.failover.force) == (target, force)
    assert decision.failover.reason.startswith("automatic failover by the health checker: ")


def test_the_automatic_failover_manifest_is_a_valid_failover() -> None:
    decision = decide_automatic_failover(replace(A_DOWN, mode=FailoverMode.CONSISTENCY))
    assert decision.failover is not None
    manifest = decision.failover.manifest()
    assert manifest["metadata"] == {
        "generateName": "auto-shop-",
        "namespace": "shop",
        "labels": {"failover.hahomelabs.com/automatic": "true", "failover.hahomelabs.com/group": "shop"},
    }
    assert manifest["spec"]["failoverMode"] == "CONSISTENCY"
    assert manifest["spec"]["failoverGroups"] == [{"name": "shop", "namespace": "shop"}]
    assert decision.stale == ("site-a",)


def test_an_automatic_failover_is_named_by_what_was_known_when_it_was_decided() -> None:
    from fsm.autofailover import AutoFailover
    from fsm.models import FailoverMode

    def auto(epoch: str) -> AutoFailover:
        return AutoFailover(
            group="shop",
            namespace="shop",
            target_cluster="site-b",
            mode=FailoverMode.UPTIME,
            force=True,
            reason="automatic",
            epoch=epoch,
        )

    assert auto("site-a|run-1").name == auto("site-a|run-1").name
    assert auto("site-a|run-1").name != auto("site-a|run-2").name
    assert auto("site-a|run-1").manifest()["metadata"]["name"].startswith("auto-shop-")
    assert auto("").manifest()["metadata"] == {
        "generateName": "auto-shop-",
        "namespace": "shop",
        "labels": {"failover.hahomelabs.com/automatic": "true", "failover.hahomelabs.com/group": "shop"},
    }
