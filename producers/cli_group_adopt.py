"""``failoverctl group adopt NS/GROUP [--active CLUSTER]``: record the first owner of a group that has
none, so that it can be failed over.

Without ``--active`` it reads the group's objects on every cluster and adopts the one cluster where
the group is active while every other cluster is passive (:func:`fsm.adoption.decide_adoption`);
anything else is ambiguous: it shows what each cluster holds and asks for ``--active``. With
``--active CLUSTER`` on a group that is not already clean with CLUSTER active, it asks for
confirmation, records CLUSTER as the owner, then makes every other cluster passive and CLUSTER active
with the RESOLVE runs of ``group resolve`` (through the workers). The owner is recorded with a
compare-and-set in DynamoDB (only while none is recorded), with an ADOPTED history record holding the
evidence, who and why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fsm.adoption import AdoptionDecision, ClusterVerdict, decide_adoption
from fsm.models import FailoverGroup, GroupKey
from producers.adoption import read_evidence
from producers.cli_common import (
    ClusterOption,
    KubeconfigOption,
    OperatorOption,
    fail,
    group_key,
    orchestrator,
    read_group,
    require_run_key,
    settings_of,
    wait_run,
)
from producers.kube import connect, kubeconfig_contexts
from producers.views import summary
from workers.api import Orchestrator, RequestError
from workers.errors import AlreadyOwned, OrchestratorError


def show_evidence(decision: AdoptionDecision) -> None:
    """Per cluster: its verdict and which objects are active, passive or neither."""
    for seen in decision.evidence:
        typer.echo(f"{seen.cluster}: {seen.verdict.value}")
        if seen.detail:
            typer.echo(f"  {seen.detail}")
        for label, items in (("active", seen.active), ("passive", seen.passive), ("neither", seen.unsettled)):
            for item in items:
                typer.echo(f"  {label + ':':9}{item}")


def _already_owned(key: GroupKey, owner: str, active: str | None) -> None:
    """A group with an owner: a no-op success when it is the one asked for (or none was), else exit 1."""
    if active is None or active == owner:
        typer.echo(f"group {key} is already adopted: {owner} is its active cluster; nothing to do")
        return
    raise fail(
        f"group {key} already has an owner, {owner!r}, not {active!r}; adoption only records a first "
        f"owner: to make {active} the active cluster, fail the group over, or settle it with "
        f"`failoverctl group resolve {key.namespace}/{key.name} --active {active} --reason TEXT`"
    )


def _record(
    handle: Orchestrator, key: GroupKey, cluster: str, decision: AdoptionDecision, reason: str
) -> bool:
    """Record ``cluster`` as the owner (compare-and-set); False when it was recorded meanwhile."""
    who = os.environ.get("USER") or "failoverctl"
    try:
        handle.adopt(
            key,
            cluster,
            evidence=decision.evidence_text(),
            actor=who,
            reason=reason or f"adopted with failoverctl group adopt by {who}",
        )
    except AlreadyOwned as owned:
        if owned.owner == cluster:
            typer.echo(f"group {key} was adopted meanwhile on {cluster} (by another site); nothing to do")
            return False
        raise fail(
            f"group {key} was adopted meanwhile on {owned.owner!r} (by another site or the watcher); "
            f"nothing was recorded; if {cluster} is to serve, settle it with "
            f"`failoverctl group resolve {key.namespace}/{key.name} --active {cluster} --reason TEXT`"
        ) from owned
    return True


def _make_others_passive(
    handle: Orchestrator, group: FailoverGroup, active: str, others: list[str], timeout: float
) -> None:
    """One RESOLVE run per other cluster (through the workers): it passive, ``active`` active."""
    key = group.key
    for passive in others:
        try:
            submission = handle.resolve(group, active=active, passive=passive, reason=f"adopt on {active}")
        except RequestError as error:
            raise fail(str(error), 2) from error
        typer.echo(f"run {submission.run.run_id}: {passive} passive, then {active} active")
        run = wait_run(handle, submission.run.run_id, timeout)
        typer.echo(summary(run))
        if run.status.value != "SUCCESS":
            raise fail(
                f"group {key} is adopted on {active}, but making {passive} passive failed: {run.message}; "
                f"finish with `failoverctl group resolve {key.namespace}/{key.name} --active {active} "
                "--reason TEXT`"
            )


def _confirm_settlement(
    key: GroupKey, target: str, decision: AdoptionDecision, others: list[str], *, yes: bool
) -> None:
    """Before adopting on ``target`` a group that is not clean with it active: every cluster must
    have answered, and the operator confirms (unless ``--yes``)."""
    unreachable = [e.cluster for e in decision.evidence if e.verdict is ClusterVerdict.UNREACHABLE]
    if unreachable:
        raise fail(
            f"group {key}: {', '.join(unreachable)} could not be read, so it cannot be made passive; "
            "adopt the group when every cluster answers"
        )
    if not others:
        raise fail(f"group {key}: {target} is not active and there is no other cluster to settle")
    if not yes:
        typer.confirm(
            f"Record {target} as the owner of {key}, then make {', '.join(others)} passive and "
            f"{target} active?",
            abort=True,
        )


def _evidence(
    kubeconfig: Path | None, clusters: list[str], group: FailoverGroup, key: GroupKey
) -> AdoptionDecision:
    try:
        clients = connect(kubeconfig, clusters)
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    try:
        return decide_adoption(key, read_evidence(clients, group))
    finally:
        for client in clients.values():
            client.close()


def adopt_command(
    ctx: typer.Context,
    *,
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    active: Annotated[
        str | None,
        typer.Option("--active", help="The cluster that is to serve the group (default: the one active now)"),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in history)")] = "",
    context: Annotated[
        str | None, typer.Option("--context", help="Cluster to read the FailoverGroup from")
    ] = None,
    cluster: ClusterOption = None,
    kubeconfig: KubeconfigOption = None,
    operator_id: OperatorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each cluster")] = 900.0,
) -> None:
    """Record the first owner (active cluster) of a group that has none, so it can be failed over.

    Without --active: the cluster where the group is active while every other one is passive; if that
    is not clear, shows what each cluster holds and exits 1. With --active: also makes every other
    cluster passive (through the workers, after a confirmation) unless it is already so."""
    settings = settings_of(ctx)
    clusters = list(cluster or settings.clusters or kubeconfig_contexts(kubeconfig))
    if active is not None and active not in clusters:
        raise fail(f"--active {active!r} is not one of the clusters ({', '.join(clusters)})", 2)
    found = read_group(group, kubeconfig, context, clusters[0] if clusters else None)
    key = group_key(group, operator_id or found.spec.operator_id, settings)
    with orchestrator(settings) as handle:
        owner = handle.owner(key)
        if owner is not None:
            _already_owned(key, owner, active)
            return
        decision = _evidence(kubeconfig, clusters, found, key)
        show_evidence(decision)
        target = active or decision.owner
        if target is None:
            raise fail(decision.message)
        clean = decision.owner == target
        others = [c for c in clusters if c != target]
        if not clean:
            require_run_key(settings)  # the RESOLVE runs need it: refuse before recording anything
            handle.store.ping()  # and the workers' Redis: down, it is said before anything is recorded
            _confirm_settlement(key, target, decision, others, yes=yes)
        if not _record(handle, key, target, decision, reason):
            return
        typer.echo(f"group {key} adopted: {target} recorded as its active cluster (history: ADOPTED)")
        if not clean:
            _make_others_passive(handle, found, target, others, timeout)
            typer.echo(f"group {key} settled: {target} is the active cluster, {', '.join(others)} passive")
