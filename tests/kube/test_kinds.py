"""The per-kind semantics of fsm.kinds, on hand-written objects (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from fsm.kinds import (
    NoReplicaCount,
    Role,
    UnknownKind,
    active_edit,
    guess_role,
    judge,
    passive_edit,
    replica_count,
)

REPLICAS = "failover.hahomelabs.com/replicas"
FLUX_RECONCILE = "kustomize.toolkit.fluxcd.io/reconcile"


def workload(
    want: int,
    *,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    **status: int,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": generation, "annotations": annotations or {}},
        "spec": {"replicas": want},
        "status": status,
    }


def volume(state: str, *conditions: tuple[str, str, str], desired: str = "secondary") -> dict[str, Any]:
    return {
        "metadata": {"name": "db-data", "generation": 2},
        "spec": {"replicationState": desired},
        "status": {
            "state": state,
            "observedGeneration": 2,
            "conditions": [{"type": t, "status": s, "reason": r} for t, s, r in conditions],
        },
    }


def test_scaling_down_remembers_the_count_and_disables_flux() -> None:
    edit = passive_edit("Deployment", workload(3))
    assert edit is not None
    assert edit.patch == {
        "metadata": {"annotations": {REPLICAS: "3", FLUX_RECONCILE: "disabled"}},
        "spec": {"replicas": 0},
    }
    assert edit.detail == "replicas 3 -> 0 (remembered 3), Flux reconcile disabled"
    scaled = workload(0, annotations={REPLICAS: "3", FLUX_RECONCILE: "disabled"})
    assert passive_edit("StatefulSet", scaled) is None


def test_scaling_up_prefers_the_remembered_count_then_the_fallback() -> None:
    remembered = workload(0, annotations={REPLICAS: "3", FLUX_RECONCILE: "disabled"})
    edit = active_edit("Deployment", remembered, replicas=5)
    assert edit is not None
    assert edit.patch == {"metadata": {"annotations": {FLUX_RECONCILE: None}}, "spec": {"replicas": 3}}
    fallback = active_edit("Deployment", workload(0), replicas=5)
    assert fallback is not None and fallback.patch == {"spec": {"replicas": 5}}
    assert "the source's count" in fallback.detail
    with pytest.raises(NoReplicaCount, match="no replica count is known"):
        active_edit("Deployment", workload(0))


def test_a_running_workload_keeps_its_count_when_made_active() -> None:
    # An autoscaler took it from the remembered 3 to 7: making it active must not scale it down.
    assert active_edit("Deployment", workload(7, annotations={REPLICAS: "3"}), replicas=2) is None


@pytest.mark.parametrize(
    ("obj", "reached", "detail"),
    [
        (workload(0, generation=2, observedGeneration=1), False, "observedGeneration 1 behind generation 2"),
        (
            workload(0, observedGeneration=1, replicas=1, readyReplicas=1),
            False,
            "replicas 1, readyReplicas 1",
        ),
        (workload(0, observedGeneration=1), True, "no replicas left"),
    ],
)
def test_passive_workloads_are_judged_from_status(obj: dict[str, Any], reached: bool, detail: str) -> None:
    assert judge("StatefulSet", obj, Role.PASSIVE)[0] is reached
    assert detail in judge("StatefulSet", obj, Role.PASSIVE)[1]


def test_active_workloads_need_every_replica_ready_and_updated() -> None:
    rolling = workload(3, observedGeneration=1, readyReplicas=3, updatedReplicas=2)
    assert judge("Deployment", rolling, Role.ACTIVE) == (False, "3/3 ready, 2/3 updated")
    done = workload(3, observedGeneration=1, readyReplicas=3, updatedReplicas=3)
    assert judge("Deployment", done, Role.ACTIVE) == (True, "3/3 ready, 3/3 updated")
    not_scaled = workload(0, annotations={REPLICAS: "3"}, observedGeneration=1)
    assert judge("Deployment", not_scaled, Role.ACTIVE) == (False, "still scaled to 0 (remembered 3)")


def test_a_demoted_volume_is_passive_while_it_resyncs() -> None:
    demoted = volume(
        "Secondary",
        ("Completed", "True", "Demoted"),
        ("Degraded", "True", "VolumeDegraded"),
        ("Resyncing", "True", "ResyncTriggered"),
    )
    reached, detail = judge("VolumeReplication", demoted, Role.PASSIVE)
    assert reached, detail
    assert "resyncs" in detail


@pytest.mark.parametrize(
    ("obj", "detail"),
    [
        (volume("Primary", ("Completed", "True", "Promoted")), "state primary, want secondary"),
        (
            volume("Secondary", ("Completed", "False", "FailedToDemote"), ("Degraded", "True", "Error")),
            "Completed=False (FailedToDemote)",
        ),
        (
            volume("Secondary", ("Completed", "True", "Demoted"), ("Degraded", "True", "Error")),
            "Degraded=True (Error)",
        ),
    ],
)
def test_a_failed_demotion_is_not_passive(obj: dict[str, Any], detail: str) -> None:
    assert judge("VolumeReplication", obj, Role.PASSIVE) == (False, detail)


def test_a_promoted_volume_must_be_complete_and_healthy() -> None:
    healthy = volume(
        "Primary", ("Completed", "True", "Promoted"), ("Degraded", "False", "Healthy"), desired="primary"
    )
    assert judge("VolumeReplication", healthy, Role.ACTIVE)[0]
    degraded = volume(
        "Primary",
        ("Completed", "True", "Promoted"),
        ("Degraded", "True", "VolumeDegraded"),
        desired="primary",
    )
    assert judge("VolumeReplication", degraded, Role.ACTIVE) == (False, "Degraded=True (VolumeDegraded)")
    stale = volume("Primary", ("Completed", "True", "Promoted"), desired="primary")
    stale["metadata"]["generation"] = 3
    assert judge("VolumeReplication", stale, Role.ACTIVE) == (
        False,
        "observedGeneration 2 behind generation 3",
    )


def test_flux_active_needs_the_requested_reconcile_handled() -> None:
    release: dict[str, Any] = {
        "metadata": {"generation": 4, "annotations": {}},
        "spec": {"suspend": True},
        "status": {"observedGeneration": 4, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    edit = active_edit("HelmRelease", release, requested_at="2030-01-01T00:00:00Z")
    assert edit is not None
    assert edit.patch == {
        "metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2030-01-01T00:00:00Z"}},
        "spec": {"suspend": False},
    }
    release["spec"]["suspend"] = False
    reached, detail = judge("HelmRelease", release, Role.ACTIVE, requested_at="2030-01-01T00:00:00Z")
    assert not reached and "not handled yet" in detail
    release["status"]["lastHandledReconcileAt"] = "2030-01-01T00:00:00Z"
    assert judge("HelmRelease", release, Role.ACTIVE, requested_at="2030-01-01T00:00:00Z")[0]
    # Without a request, Ready=True of the current generation is enough.
    assert judge("Kustomization", release, Role.ACTIVE) == (True, "Ready=True")


def test_observation_reads_role_and_replicas_from_the_spec() -> None:
    assert guess_role("Deployment", workload(0)) is Role.PASSIVE
    assert replica_count("Deployment", workload(0, annotations={REPLICAS: "4"})) == 4
    assert replica_count("Deployment", workload(2, annotations={REPLICAS: "4"})) == 2
    assert replica_count("Deployment", workload(0)) is None
    assert guess_role("Ingress", {"metadata": {"annotations": {}}}) is None


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(UnknownKind, match="'ConfigMap' is not one the orchestrator manages"):
        passive_edit("ConfigMap", {})
