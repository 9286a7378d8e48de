"""KubeEffects against sandbox clusters: every kind made passive and active, as the server holds it,
checks that follow the simulated controllers, idempotency and observation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from fsm.models import ResourceRef
from sandbox.kube import SandboxCluster
from tests.factories import all_refs, group
from tests.kube.conftest import notes, ref, stored, wait_for
from workers.errors import PermanentError
from workers.kube import KubeEffects
from workers.ports import Check, Role

pytestmark = pytest.mark.integration

EPOCH = "failover.hahomelabs.com/epoch"
REPLICAS = "failover.hahomelabs.com/replicas"
FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"
DNS = "external-dns.alpha.kubernetes.io/controller"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
STAMP = "2030-01-01T00:00:00Z"


def _passive_form(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What API.md's "make passive" leaves on each kind."""
    kind, spec, annotations = obj["kind"], obj["spec"], obj["metadata"].get("annotations") or {}
    if kind in ("Deployment", "StatefulSet"):
        return spec["replicas"], annotations.get(REPLICAS), annotations.get(FLUX_RECONCILE)
    if kind in ("CronJob", "HelmRelease", "Kustomization"):
        return (spec["suspend"],)
    if kind in ("Ingress", "VirtualService"):
        return (annotations.get(DNS),)
    return (spec["replicationState"],)


PASSIVE_FORM = {
    "Deployment/web": (0, "3", "disabled"),
    "StatefulSet/db": (0, "1", "disabled"),
    "StatefulSet/cache": (0, "2", "disabled"),
    "CronJob/report": (True,),
    "VolumeReplication/db-data": ("secondary",),
    "VolumeReplication/cache-data": ("secondary",),
    "VirtualService/web": ("ignore",),
    "Ingress/web": ("ignore",),
    "HelmRelease/shop": (True,),
}
ACTIVE_FORM = {
    "Deployment/web": (3, "3", None),
    "StatefulSet/db": (1, "1", None),
    "StatefulSet/cache": (2, "2", None),
    "CronJob/report": (False,),
    "VolumeReplication/db-data": ("primary",),
    "VolumeReplication/cache-data": ("primary",),
    "VirtualService/web": ("dns-controller",),
    "Ingress/web": ("dns-controller",),
    "HelmRelease/shop": (False,),
}
REFS = {f"{r.kind}/{r.name}": r for r in all_refs(group())}


def wait_check(
    effects: KubeEffects,
    cluster: str,
    r: ResourceRef,
    role: Role,
    until: Callable[[Check], bool] = lambda c: c.reached,
) -> Check:
    """Check until ``until`` holds (by default: reached); the last check."""
    seen: list[Check] = []

    def probe() -> bool:
        seen.append(effects.check(cluster, r, role))
        return until(seen[-1])

    wait_for(probe)
    return seen[-1]


def settled_version(cluster: SandboxCluster, r: ResourceRef) -> str:
    """The object's resourceVersion once the controllers are paused (they write status too)."""
    cluster.controllers.paused = True
    time.sleep(0.05)  # let a pass already running finish
    return str(stored(cluster, r)["metadata"]["resourceVersion"])


@pytest.mark.parametrize("key", sorted(REFS))
def test_make_passive_on_the_active_site(effects: KubeEffects, site_a: SandboxCluster, key: str) -> None:
    r = REFS[key]
    change = effects.make_passive("site-a", r, epoch=7)
    assert change.changed and change.action == "make_passive" and change.cluster == "site-a"
    obj = stored(site_a, r)
    assert _passive_form(obj) == PASSIVE_FORM[key]
    assert obj["metadata"]["annotations"][EPOCH] == "7"
    wait_for(lambda: effects.check("site-a", r, Role.PASSIVE).reached)
    # Idempotent: nothing is written again, even with another epoch.
    rv = settled_version(site_a, r)
    again = effects.make_passive("site-a", r, epoch=8)
    assert (again.changed, again.detail) == (False, "already passive")
    after = stored(site_a, r)
    assert after["metadata"]["resourceVersion"] == rv
    assert after["metadata"]["annotations"][EPOCH] == "7"


@pytest.mark.parametrize("key", sorted(REFS))
def test_make_active_on_the_passive_site(effects: KubeEffects, site_b: SandboxCluster, key: str) -> None:
    r = REFS[key]
    before = stored(site_b, r)["metadata"]["resourceVersion"]
    change = effects.make_active("site-b", r, epoch=9, requested_at=STAMP)
    assert change.changed and change.action == "make_active"
    obj = stored(site_b, r)
    assert obj["metadata"]["resourceVersion"] != before
    assert _passive_form(obj) == ACTIVE_FORM[key]
    assert obj["metadata"]["annotations"][EPOCH] == "9"
    wait_for(lambda: effects.check("site-b", r, Role.ACTIVE, requested_at=STAMP).reached)
    rv = settled_version(site_b, r)
    again = effects.make_active("site-b", r, epoch=10, requested_at=STAMP)
    assert (again.changed, again.detail) == (False, "already active")
    assert stored(site_b, r)["metadata"]["resourceVersion"] == rv


def test_change_details_say_what_changed(effects: KubeEffects) -> None:
    web = ref("Deployment", "web")
    assert effects.make_passive("site-a", web, epoch=1).detail == (
        "replicas 3 -> 0 (remembered 3), Flux reconcile disabled"
    )
    assert effects.make_active("site-a", web, epoch=2).detail == (
        "replicas 0 -> 3 (remembered), Flux reconcile re-enabled"
    )
    assert effects.make_passive("site-a", ref("Ingress", "web"), epoch=1).detail == (
        "external-dns controller dns-controller -> ignore"
    )
    assert effects.make_active("site-b", ref("VolumeReplication", "db-data"), epoch=3).detail == (
        "replicationState secondary -> primary"
    )


def test_workload_checks_follow_the_controller(effects: KubeEffects, site_a: SandboxCluster) -> None:
    web = ref("Deployment", "web")
    site_a.controllers.paused = True
    effects.make_passive("site-a", web, epoch=1)
    check = effects.check("site-a", web, Role.PASSIVE)
    assert not check.reached
    assert check.detail == "observedGeneration 1 behind generation 2"
    site_a.controllers.paused = False
    wait_for(lambda: effects.check("site-a", web, Role.PASSIVE).reached)
    assert stored(site_a, web).get("status", {}).get("readyReplicas", 0) == 0

    site_a.controllers.replica_step = 0.2
    effects.make_active("site-a", web, epoch=2)
    partly = wait_check(effects, "site-a", web, Role.ACTIVE, lambda c: c.detail.startswith("1/3"))
    assert not partly.reached
    done = wait_check(effects, "site-a", web, Role.ACTIVE)
    assert done.detail == "3/3 ready, 3/3 updated"


def test_volume_checks_follow_the_csi_addons_controller(effects: KubeEffects, site_a: SandboxCluster) -> None:
    volume = ref("VolumeReplication", "db-data")
    site_a.controllers.volume_resync_delay = 60.0  # stays Degraded/VolumeDegraded after demotion
    site_a.controllers.paused = True
    effects.make_passive("site-a", volume, epoch=1)
    assert not effects.check("site-a", volume, Role.PASSIVE).reached
    site_a.controllers.paused = False
    demoted = wait_check(effects, "site-a", volume, Role.PASSIVE)
    degraded = next(c for c in stored(site_a, volume)["status"]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "VolumeDegraded")
    assert "resyncs" in demoted.detail

    effects.make_active("site-b", volume, epoch=1)
    assert not effects.check("site-b", volume, Role.ACTIVE).reached
    promoted = wait_check(effects, "site-b", volume, Role.ACTIVE)
    assert promoted.detail == "primary, Completed=True, not Degraded"


@pytest.mark.parametrize(
    "case",
    [
        ("stuck", "site-b", Role.ACTIVE, "observedGeneration {old} behind generation {new}"),
        ("degraded", "site-b", Role.ACTIVE, "Degraded=True (VolumeDegraded)"),
        ("fail", "site-b", Role.ACTIVE, "Completed=False (FailedToPromote)"),
        ("stuck", "site-a", Role.PASSIVE, "observedGeneration {old} behind generation {new}"),
        ("fail", "site-a", Role.PASSIVE, "Completed=False (FailedToDemote)"),
    ],
)
def test_volume_faults_keep_the_check_unreached(
    effects: KubeEffects, fleet: Any, case: tuple[str, str, Role, str]
) -> None:
    fault, side, role, detail = case
    cluster: SandboxCluster = fleet[side]
    volume = ref("VolumeReplication", "db-data")
    generation = stored(cluster, volume)["metadata"]["generation"]
    cluster.controllers.volume_faults["db-data"] = fault
    if role is Role.ACTIVE:
        effects.make_active(side, volume, epoch=1)
    else:
        effects.make_passive(side, volume, epoch=1)
    expected = detail.format(old=generation, new=generation + 1)
    wait_for(lambda: effects.check(side, volume, role).detail == expected, timeout=2.0)
    time.sleep(0.3)  # many controller passes later, still not there
    assert effects.check(side, volume, role) == Check(reached=False, detail=expected)


def test_flux_reconcile_request_round_trip(effects: KubeEffects, site_b: SandboxCluster) -> None:
    release = ref("HelmRelease", "shop")
    site_b.controllers.paused = True
    effects.make_active("site-b", release, epoch=4, requested_at=STAMP)
    assert notes(site_b, release)[REQUESTED_AT] == STAMP
    check = effects.check("site-b", release, Role.ACTIVE, requested_at=STAMP)
    assert not check.reached and "not handled yet" in check.detail
    site_b.controllers.paused = False
    wait_for(lambda: effects.check("site-b", release, Role.ACTIVE, requested_at=STAMP).reached)
    assert stored(site_b, release)["status"]["lastHandledReconcileAt"] == STAMP
    # Another run's request is a new one: not handled until the controller sees it.
    assert not effects.check("site-b", release, Role.ACTIVE, requested_at="2031-01-01T00:00:00Z").reached


def test_kustomization_suspend_and_resume(effects: KubeEffects, site_a: SandboxCluster) -> None:
    site_a.store.put(
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "shop"},
            "spec": {"interval": "10m", "path": "./apps", "prune": True, "suspend": False},
        }
    )
    apps = ref("Kustomization", "apps")
    wait_for(lambda: effects.check("site-a", apps, Role.ACTIVE).reached)
    assert effects.make_passive("site-a", apps, epoch=5).changed
    assert stored(site_a, apps)["spec"]["suspend"] is True
    assert effects.check("site-a", apps, Role.PASSIVE).reached
    assert effects.make_active("site-a", apps, epoch=6, requested_at=STAMP).changed
    wait_for(lambda: effects.check("site-a", apps, Role.ACTIVE, requested_at=STAMP).reached)


def test_replica_count_fallback_and_its_absence(effects: KubeEffects, site_b: SandboxCluster) -> None:
    web = ref("Deployment", "web")
    obj = stored(site_b, web)
    del obj["metadata"]["annotations"][REPLICAS]
    site_b.store.put(obj)
    with pytest.raises(PermanentError, match="no replica count is known") as raised:
        effects.make_active("site-b", web, epoch=1)
    assert (raised.value.cluster, raised.value.obj) == ("site-b", "Deployment shop/web")
    change = effects.make_active("site-b", web, epoch=1, replicas=4)
    assert change.detail.startswith("replicas 0 -> 4 (the source's count)")
    assert stored(site_b, web)["spec"]["replicas"] == 4


def test_observe(effects: KubeEffects) -> None:
    active = effects.observe("site-a", ref("Deployment", "web"))
    assert (active.exists, active.role, active.replicas) == (True, Role.ACTIVE, 3)
    passive = effects.observe("site-b", ref("Deployment", "web"))
    assert (passive.exists, passive.role, passive.replicas) == (True, Role.PASSIVE, 3)
    volume = effects.observe("site-b", ref("VolumeReplication", "db-data"))
    assert (volume.role, volume.replicas) == (Role.PASSIVE, None)
    missing = effects.observe("site-a", ResourceRef(kind="Ingress", namespace="shop", name="gone"))
    assert not missing.exists
    assert missing.detail == "Ingress shop/gone not found on cluster 'site-a'"
