"""Adopting a group: which cluster becomes the first recorded owner of a FailoverGroup, judged from
its objects on every cluster. Pure: the caller reads the objects and passes them in.

A user's own FailoverGroup has no owner in DynamoDB until one is recorded; without one it cannot be
failed over. ``failoverctl group adopt`` and the watcher record it (a compare-and-set: only while no
owner is recorded) when the clusters say it without doubt:

- each object of the group on a cluster is **active** when :func:`fsm.kinds.active_sign` says so
  (serving, writing, publishing or reconciling), **passive** when it has reached the passive role of
  its kind (:func:`fsm.kinds.judge`, docs/API.md), and **unsettled** otherwise (missing, scaling
  down, an Ingress without the external-dns controller annotation, a degraded secondary...);
- a cluster is ACTIVE when every object is active, PASSIVE when every object is passive, MIXED
  otherwise, and UNREACHABLE when it did not answer or the FailoverGroup is not there;
- the group is adopted on a cluster only when exactly one cluster is ACTIVE and every other one is
  PASSIVE. Anything else (an unreachable cluster, several active, none active, a mixed cluster) is
  ambiguous: nothing is recorded and an operator chooses with ``--active``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from fsm.kinds import NETWORK, Obj, Role, active_sign, judge
from fsm.models import FailoverGroup, GroupKey, ResourceRef

OUTCOME_ADOPTED = "ADOPTED"
CONDITION_ADOPTED = "Adopted"
# Longest evidence text kept in a history record or a condition message.
EVIDENCE_LIMIT = 3000


class ClusterVerdict(StrEnum):
    ACTIVE = "ACTIVE"
    PASSIVE = "PASSIVE"
    MIXED = "MIXED"
    UNREACHABLE = "UNREACHABLE"


class AdoptionReason(StrEnum):
    """The reason of the ``Adopted`` condition (and of the decision)."""

    ADOPTED = "Adopted"
    UNAMBIGUOUS = "Unambiguous"
    AMBIGUOUS = "Ambiguous"
    NO_ACTIVE_CLUSTER = "NoActiveCluster"
    UNREACHABLE = "Unreachable"


def adopt_command(group: GroupKey, cluster: str | None = None) -> str:
    """The command that records the group's first owner, as every message about it quotes it."""
    return f"failoverctl group adopt {group.namespace}/{group.name} --active {cluster or 'CLUSTER'}"


@dataclass(frozen=True)
class ClusterEvidence:
    """What one cluster says about the group: its objects by role, in words."""

    cluster: str
    verdict: ClusterVerdict
    active: tuple[str, ...] = ()
    passive: tuple[str, ...] = ()
    unsettled: tuple[str, ...] = ()
    detail: str = ""

    def describe(self) -> str:
        """``site-a: ACTIVE (active: Deployment/web: 3 replicas, 3 ready; ...)``."""
        if self.verdict is ClusterVerdict.UNREACHABLE:
            return f"{self.cluster}: UNREACHABLE ({self.detail})"
        parts = [
            f"{label}: {'; '.join(items)}"
            for label, items in (
                ("active", self.active),
                ("passive", self.passive),
                ("neither", self.unsettled),
            )
            if items
        ]
        return f"{self.cluster}: {self.verdict.value} ({' | '.join(parts) or 'no objects'})"

    def as_dict(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "verdict": self.verdict.value,
            "active": list(self.active),
            "passive": list(self.passive),
            "neither": list(self.unsettled),
            "detail": self.detail,
        }


def judge_cluster(
    cluster: str, group: FailoverGroup, objects: Mapping[ResourceRef, Obj | None]
) -> ClusterEvidence:
    """The group's objects on ``cluster`` (None: not found), each active, passive or neither."""
    active: list[str] = []
    passive: list[str] = []
    unsettled: list[str] = []
    for ref in group.refs():
        obj = objects.get(ref)
        name = f"{ref.kind}/{ref.name}"
        if obj is None:
            unsettled.append(f"{name}: not found")
            continue
        sign = active_sign(ref.kind, obj)
        if sign is not None:
            active.append(f"{name}: {sign}")
            continue
        reached, detail = judge(ref.kind, obj, Role.PASSIVE)
        if reached and ref.kind in NETWORK:
            detail = "DNS ignored"
        (passive if reached else unsettled).append(f"{name}: {detail}")
    if active and not passive and not unsettled:
        verdict = ClusterVerdict.ACTIVE
    elif not active and not unsettled:
        verdict = ClusterVerdict.PASSIVE
    else:
        verdict = ClusterVerdict.MIXED
    return ClusterEvidence(cluster, verdict, tuple(active), tuple(passive), tuple(unsettled))


def unreachable_cluster(cluster: str, why: str) -> ClusterEvidence:
    """A cluster whose objects could not be read: never evidence for adopting anything."""
    return ClusterEvidence(cluster, ClusterVerdict.UNREACHABLE, detail=why)


@dataclass(frozen=True)
class AdoptionDecision:
    """``owner`` to record (None: ambiguous), the condition reason, and a sentence saying why."""

    owner: str | None
    reason: AdoptionReason
    message: str
    evidence: tuple[ClusterEvidence, ...]
    suggested: str | None = None

    def evidence_text(self) -> str:
        """Every cluster's evidence on one line (bounded), for history and conditions."""
        text = " || ".join(e.describe() for e in self.evidence)
        return text if len(text) <= EVIDENCE_LIMIT else text[: EVIDENCE_LIMIT - 3] + "..."


def decide_adoption(group: GroupKey, evidence: Sequence[ClusterEvidence]) -> AdoptionDecision:
    """Adopt the one ACTIVE cluster when every other cluster is PASSIVE; otherwise say why not and
    which command settles it (``suggested``: the only cluster with active objects, if there is one)."""
    found = tuple(evidence)
    name = f"{group.namespace}/{group.name}"
    unreachable = [e.cluster for e in found if e.verdict is ClusterVerdict.UNREACHABLE]
    active = [e.cluster for e in found if e.verdict is ClusterVerdict.ACTIVE]
    mixed = [e.cluster for e in found if e.verdict is ClusterVerdict.MIXED]
    with_active = [e.cluster for e in found if e.active]
    suggested = with_active[0] if len(with_active) == 1 else None

    def no(reason: AdoptionReason, why: str) -> AdoptionDecision:
        message = f"group {name}: {why}; choose the active cluster with `{adopt_command(group, suggested)}`"
        return AdoptionDecision(None, reason, message, found, suggested)

    if not found:
        return no(AdoptionReason.UNREACHABLE, "no cluster to read it from")
    if unreachable:
        return no(
            AdoptionReason.UNREACHABLE,
            f"{', '.join(unreachable)} could not be read, so which cluster serves is not known",
        )
    if mixed:
        return no(
            AdoptionReason.AMBIGUOUS,
            f"{', '.join(mixed)} {'holds' if len(mixed) == 1 else 'hold'} both active and passive (or "
            "unsettled) objects",
        )
    if len(active) > 1:
        return no(AdoptionReason.AMBIGUOUS, f"{', '.join(active)} are all active")
    if not active:
        return no(AdoptionReason.NO_ACTIVE_CLUSTER, "no cluster is active, every one is passive")
    owner = active[0]
    others = [e.cluster for e in found if e.cluster != owner]
    passive = f"; {', '.join(others)} passive" if others else ""
    return AdoptionDecision(
        owner,
        AdoptionReason.UNAMBIGUOUS,
        f"group {name}: {owner} is active{passive}: {owner} is its owner",
        found,
        owner,
    )
