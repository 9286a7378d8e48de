"""Reading the evidence for adopting a group, and recording the adoption: shared by
``failoverctl group adopt`` and the watcher (:class:`producers.group_status.GroupStatusWriter`).

The decision itself is pure (:mod:`fsm.adoption`); this module reads the group's objects on every
cluster the way the health checker reads them (:func:`producers.health.read_and_judge`) and records
the owner through :meth:`workers.api.Orchestrator.adopt` (a compare-and-set in DynamoDB). A cluster
that does not answer, or where the FailoverGroup is missing, is UNREACHABLE: never evidence for
adopting anything.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from fsm.adoption import (
    AdoptionDecision,
    AdoptionReason,
    ClusterEvidence,
    decide_adoption,
    judge_cluster,
    unreachable_cluster,
)
from fsm.health import ClusterRole
from fsm.models import FailoverGroup
from producers.health import read_and_judge
from producers.kube import FAILOVER_GROUPS, ClusterClient
from workers.api import Orchestrator
from workers.errors import AlreadyOwned, OrchestratorError


def read_evidence(clients: Mapping[str, ClusterClient], group: FailoverGroup) -> list[ClusterEvidence]:
    """What every cluster of ``clients`` says about ``group`` (in the order of ``clients``)."""
    found = []
    for name, client in clients.items():
        try:
            present = client.find(FAILOVER_GROUPS, group.metadata.namespace, group.metadata.name)
        except OrchestratorError as error:
            found.append(unreachable_cluster(name, error.describe()))
            continue
        if present is None:
            found.append(unreachable_cluster(name, "the FailoverGroup is not there"))
            continue
        health, objects = read_and_judge(client, group, ClusterRole.STANDBY)
        if objects is None:
            found.append(unreachable_cluster(name, health.detail))
            continue
        found.append(judge_cluster(name, group, objects))
    return found


@dataclass(frozen=True)
class Adoption:
    """What an automatic adoption came to: the owner now recorded (None: none), whether this call
    recorded it, and the decision with its evidence (None when an owner was recorded already)."""

    owner: str | None
    recorded: bool
    decision: AdoptionDecision | None
    blocked: str = ""  # why nothing was tried although the clusters were clear (a run holds the lock)


def adopt_when_clear(
    orchestrator: Orchestrator,
    clients: Mapping[str, ClusterClient],
    group: FailoverGroup,
    *,
    actor: str,
    reason: str,
) -> Adoption:
    """Adopt ``group`` on its one active cluster if the clusters say so without doubt and no owner
    is recorded; a run holding the group's lock (a resolution in flight) blocks it."""
    decision = decide_adoption(group.key, read_evidence(clients, group))
    if decision.owner is None:
        return Adoption(None, False, decision)
    lock = orchestrator.lock(group.key)
    if lock is not None and lock.expires_at > time.time():
        return Adoption(None, False, decision, f"run {lock.run_id} holds the group's lock")
    try:
        orchestrator.adopt(
            group.key, decision.owner, evidence=decision.evidence_text(), actor=actor, reason=reason
        )
    except AlreadyOwned as owned:
        return Adoption(owned.owner, False, decision)
    return Adoption(decision.owner, True, decision)


def adopted_condition(owner: str | None, adoption: Adoption | None) -> tuple[str, bool, str, str]:
    """The ``Adopted`` condition ``(type, true, reason, message)`` of a FailoverGroup."""
    if owner is not None:
        return ("Adopted", True, AdoptionReason.ADOPTED.value, f"{owner} is the recorded active cluster")
    if adoption is None or adoption.decision is None:
        return ("Adopted", False, AdoptionReason.UNREACHABLE.value, "the clusters could not be judged")
    decision = adoption.decision
    if adoption.blocked:
        message = f"{decision.message}; not recorded yet: {adoption.blocked}"
        return ("Adopted", False, "RunInFlight", message)
    return ("Adopted", False, decision.reason.value, f"{decision.message}; seen: {decision.evidence_text()}")
