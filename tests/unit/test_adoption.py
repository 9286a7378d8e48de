"""The adoption decision (fsm.adoption): adopt only when exactly one cluster is active and every other
passive; anything else is ambiguous, with per-cluster evidence and the command to run."""

from __future__ import annotations

import copy

from fsm.adoption import (
    AdoptionReason,
    ClusterVerdict,
    adopt_command,
    decide_adoption,
    judge_cluster,
    unreachable_cluster,
)
from fsm.models import ResourceRef
from tests.payments import PAYMENTS, group, objects

API = ResourceRef(kind="Deployment", namespace="payments", name="api")
INGRESS = ResourceRef(kind="Ingress", namespace="payments", name="api")


def test_each_object_is_active_passive_or_neither() -> None:
    active = judge_cluster("site-a", group(), objects(active=True))
    passive = judge_cluster("site-b", group(), objects(active=False))
    assert active.verdict is ClusterVerdict.ACTIVE and len(active.active) == 4 and not active.passive
    assert "Deployment/api: 2 replicas, 2 ready" in active.active
    assert passive.verdict is ClusterVerdict.PASSIVE and len(passive.passive) == 4 and not passive.active
    missing = objects(active=False)
    del missing[API]
    seen = judge_cluster("site-b", group(), missing)
    assert seen.verdict is ClusterVerdict.MIXED and seen.unsettled == ("Deployment/api: not found",)


def test_an_ingress_without_the_dns_annotation_is_neither() -> None:
    # external-dns publishes an Ingress without the controller annotation: not provably passive.
    found = objects(active=False)
    bare = copy.deepcopy(found[INGRESS])
    bare["metadata"]["annotations"] = {}
    found[INGRESS] = bare
    seen = judge_cluster("site-b", group(), found)
    assert seen.verdict is ClusterVerdict.MIXED
    assert [u.split(":")[0] for u in seen.unsettled] == ["Ingress/api"]


def test_one_active_cluster_and_every_other_passive_is_adopted() -> None:
    evidence = [
        judge_cluster("site-a", group(), objects(active=True)),
        judge_cluster("site-b", group(), objects(active=False)),
        judge_cluster("site-c", group(), objects(active=False)),
    ]
    decision = decide_adoption(PAYMENTS, evidence)
    assert decision.owner == "site-a" and decision.reason is AdoptionReason.UNAMBIGUOUS
    assert "site-b, site-c passive" in decision.message
    assert "site-a: ACTIVE (active: Deployment/api" in decision.evidence_text()


def test_ambiguous_states_adopt_nothing_and_say_what_to_run() -> None:
    a_active = judge_cluster("site-a", group(), objects(active=True))
    b_active = judge_cluster("site-b", group(), objects(active=True))
    b_passive = judge_cluster("site-b", group(), objects(active=False))
    a_passive = judge_cluster("site-a", group(), objects(active=False))
    half = objects(active=False)
    half[API] = objects(active=True)[API]
    b_mixed = judge_cluster("site-b", group(), half)
    down = unreachable_cluster("site-b", "connection refused")
    cases = {
        "both active": ([a_active, b_active], AdoptionReason.AMBIGUOUS, "are all active", None),
        "none active": (
            [a_passive, b_passive],
            AdoptionReason.NO_ACTIVE_CLUSTER,
            "no cluster is active",
            None,
        ),
        "mixed": ([a_passive, b_mixed], AdoptionReason.AMBIGUOUS, "site-b holds both", "site-b"),
        "unreachable": ([a_active, down], AdoptionReason.UNREACHABLE, "site-b could not be read", "site-a"),
        "nothing": ([], AdoptionReason.UNREACHABLE, "no cluster", None),
    }
    for name, (evidence, reason, words, suggested) in cases.items():
        decision = decide_adoption(PAYMENTS, evidence)
        assert decision.owner is None, name
        assert decision.reason is reason, name
        assert words in decision.message, (name, decision.message)
        assert decision.suggested == suggested, name
        assert f"`{adopt_command(PAYMENTS, suggested)}`" in decision.message, name
    assert (
        "site-b: UNREACHABLE (connection refused)"
        in decide_adoption(PAYMENTS, [a_active, down]).evidence_text()
    )


def test_the_command_names_the_group_and_the_cluster() -> None:
    assert adopt_command(PAYMENTS) == "failoverctl group adopt payments/payments --active CLUSTER"
    assert adopt_command(PAYMENTS, "site-a") == "failoverctl group adopt payments/payments --active site-a"
