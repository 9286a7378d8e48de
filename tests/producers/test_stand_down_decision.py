"""``fsm.kinds.active_sign`` and ``fsm.health``: which objects make a cluster active, and when a site
that came back is stood down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from fsm.health import ClusterRole, GroupHealth, Health, active_objects, decide_stand_down, unreachable
from fsm.kinds import active_sign
from fsm.models import FailoverGroup, ResourceRef
from tests.factories import SHOP_GROUP

DNS = "external-dns.alpha.kubernetes.io/controller"


def workload(replicas: int, ready: int = 0) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"readyReplicas": ready, "replicas": ready}}


def volume(state: str, wanted: str | None = None) -> dict[str, Any]:
    return {"spec": {"replicationState": wanted or state.lower()}, "status": {"state": state}}


def dns(value: str | None) -> dict[str, Any]:
    return {"metadata": {"annotations": {DNS: value} if value else {}}}


@pytest.mark.parametrize(
    ("kind", "obj", "sign"),
    [
        ("Deployment", workload(3, 3), "3 replicas, 3 ready"),
        ("StatefulSet", workload(2, 0), "2 replicas, 0 ready"),
        ("Deployment", workload(0, 1), "0 replicas, 1 ready"),  # still scaling down: still serving
        ("Deployment", workload(0, 0), None),
        ("Deployment", {"spec": {}}, "1 replicas, 0 ready"),  # Kubernetes defaults replicas to 1
        ("CronJob", {"spec": {"suspend": False}}, "scheduled"),
        ("CronJob", {"spec": {"suspend": True}}, None),
        ("VolumeReplication", volume("Primary"), "primary"),
        ("VolumeReplication", volume("Secondary", "primary"), "replicationState primary"),
        ("VolumeReplication", volume("Secondary"), None),
        ("VirtualService", dns("dns-controller"), "DNS published"),
        ("Ingress", dns("ignore"), None),
        ("Ingress", dns(None), None),
        ("HelmRelease", {"spec": {"suspend": False}}, "resumed"),
        ("Kustomization", {"spec": {}}, "resumed"),
        ("Kustomization", {"spec": {"suspend": True}}, None),
        ("Deployment", None, None),  # missing: nothing to stand down
        ("ConfigMap", {"spec": {}}, None),
    ],
)
def test_active_sign(kind: str, obj: dict[str, Any] | None, sign: str | None) -> None:
    assert active_sign(kind, obj) == sign


def test_active_objects_names_each_active_object_in_the_groups_order() -> None:
    group = FailoverGroup.model_validate(SHOP_GROUP)
    refs = [*group.workload_refs(), *group.volume_refs(), *group.network_refs(), *group.flux_refs()]
    passive: dict[ResourceRef, dict[str, Any] | None] = {}
    for ref in refs:
        passive[ref] = {
            "Deployment": workload(0),
            "StatefulSet": workload(0),
            "CronJob": {"spec": {"suspend": True}},
            "VolumeReplication": volume("Secondary"),
            "Ingress": dns("ignore"),
            "VirtualService": dns("ignore"),
        }.get(ref.kind, {"spec": {"suspend": True}})
    assert active_objects(group, passive) == ()
    web = next(r for r in refs if r.kind == "Deployment")
    ingress = next(r for r in refs if r.kind in ("Ingress", "VirtualService"))
    some = {**passive, web: workload(3, 3), ingress: dns("dns-controller")}
    assert active_objects(group, some) == (
        f"Deployment/{web.name}: 3 replicas, 3 ready",
        f"{ingress.kind}/{ingress.name}: DNS published",
    )


SERVING = GroupHealth("site-b", ClusterRole.PRIMARY, Health.OK, (), "every resource as expected")
NOT_SERVING = GroupHealth(
    "site-b",
    ClusterRole.PRIMARY,
    Health.ERROR,
    (),
    "Deployment/web: 0/3 ready; VolumeReplication/db: state secondary",
)
OWNER_UNREADABLE = unreachable("site-b", ClusterRole.PRIMARY, "did not answer")


@dataclass(frozen=True)
class Case:
    name: str
    cluster: str
    owner: str | None
    active: tuple[str, ...]
    lock: str | None
    stand_down: bool
    words: tuple[str, ...]
    owner_health: GroupHealth | None = SERVING
    diverged: str | None = None
    diverges: bool = False


ACTIVE = ("Deployment/web: 3 replicas, 3 ready", "Ingress/web: DNS published")
CASES = [
    Case(
        "a site that came back active is stood down, naming its active objects",
        "site-a",
        "site-b",
        ACTIVE,
        None,
        True,
        ("site-a came back", "owned by site-b", "Deployment/web: 3 replicas, 3 ready", "Ingress/web"),
    ),
    Case(
        "one active object is enough",
        "site-a",
        "site-b",
        ACTIVE[1:],
        None,
        True,
        ("Ingress/web: DNS published",),
    ),
    Case(
        "never the owner, however active",
        "site-b",
        "site-b",
        ACTIVE,
        None,
        False,
        ("is the active cluster",),
    ),
    Case(
        "never while a run holds the lock (a failover's target looks active before the owner flips)",
        "site-a",
        "site-b",
        ACTIVE,
        "run-7",
        False,
        ("run run-7 holds the group's lock", "Deployment/web"),
    ),
    Case(
        "a passive standby is left alone",
        "site-a",
        "site-b",
        (),
        None,
        False,
        ("passive as expected",),
    ),
    Case(
        "a passive standby is left alone while locked too",
        "site-a",
        "site-b",
        (),
        "run-7",
        False,
        ("passive as expected",),
    ),
    Case(
        "never when the owner does not serve: it may be the only serving site; the group is diverged",
        "site-a",
        "site-b",
        ACTIVE,
        None,
        False,
        ("owner site-b does not serve", "0/3 ready", "diverged"),
        owner_health=NOT_SERVING,
        diverges=True,
    ),
    Case(
        "never when the owner could not be read (nothing decided, not diverged)",
        "site-a",
        "site-b",
        ACTIVE,
        None,
        False,
        ("owner site-b could not be read",),
        owner_health=OWNER_UNREADABLE,
    ),
    Case(
        "never while the group is diverged, even with a serving owner",
        "site-a",
        "site-b",
        ACTIVE,
        None,
        False,
        ("the group is diverged (run r1 failed past its point of no return)", "group resolve"),
        diverged="run r1 failed past its point of no return",
    ),
    Case(
        "no owner recorded: nothing to compare with",
        "site-a",
        None,
        ACTIVE,
        None,
        False,
        ("no active cluster is recorded",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide_stand_down(case: Case) -> None:
    decision = decide_stand_down(
        group="shop/shop",
        cluster=case.cluster,
        owner=case.owner,
        active=case.active,
        lock_holder=case.lock,
        owner_health=case.owner_health,
        diverged=case.diverged,
    )
    assert (decision.cluster, decision.stand_down) == (case.cluster, case.stand_down)
    assert decision.diverged == case.diverges
    assert decision.reason.startswith("group shop/shop: ")
    for words in case.words:
        assert words in decision.reason
