"""``failoverctl group``: commands on a FailoverGroup as a whole. ``group resolve`` settles a diverged
group (a run that failed past its point of no return, or clusters that contradict DynamoDB);
``group adopt`` records the first owner of a group that has none (:mod:`producers.cli_group_adopt`);
``group show`` prints what is known about a group (:mod:`producers.cli_group_show`)."""

from __future__ import annotations

from typing import Annotated

import typer

from producers.cli_common import (
    ClusterOption,
    KubeconfigOption,
    OperatorOption,
    fail,
    group_key,
    orchestrator,
    out,
    read_group,
    settings_of,
    wait_run,
)
from producers.kube import kubeconfig_contexts
from producers.views import summary
from workers.api import RequestError

group_app = typer.Typer(help="Commands on a FailoverGroup as a whole.", no_args_is_help=True)


@group_app.command("resolve")
def resolve_command(
    ctx: typer.Context,
    *,
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    active: Annotated[str, typer.Option("--active", help="The cluster that is to serve the group")],
    reason: Annotated[str, typer.Option(help="Why (recorded in history)")],
    context: Annotated[
        str | None, typer.Option("--context", help="Cluster to read the FailoverGroup from")
    ] = None,
    cluster: ClusterOption = None,
    kubeconfig: KubeconfigOption = None,
    operator_id: OperatorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each cluster")] = 900.0,
) -> None:
    """Settle a diverged group on one cluster, recorded as its owner.

    Every other cluster is made passive (and fenced), then ACTIVE is made active and recorded as the
    owner; the divergence is cleared and history records it.

    Runs through the workers like any failover (they must be running), one cluster at a time."""
    settings = settings_of(ctx)
    clusters = list(cluster or settings.clusters or kubeconfig_contexts(kubeconfig))
    if active not in clusters:
        raise fail(f"--active {active!r} is not one of the clusters ({', '.join(clusters)})", 2)
    found = read_group(group, kubeconfig, context, clusters[0] if clusters else None)
    key = group_key(group, operator_id or found.spec.operator_id, settings)
    others = [c for c in clusters if c != active]
    with orchestrator(settings) as handle:
        divergence = handle.divergence(key)
        said = f"diverged: {divergence.reason}" if divergence else "not recorded as diverged"
        out().print(f"group {key} is {said}")
        if divergence is not None and divergence.detail:
            out().print(f"  seen: {divergence.detail}")
        if not yes:
            typer.confirm(
                f"Make {', '.join(others)} passive and {active} active for {key}, and record {active} as "
                "its owner?",
                abort=True,
            )
        for passive in others:
            try:
                submission = handle.resolve(found, active=active, passive=passive, reason=reason)
            except RequestError as error:
                raise fail(str(error), 2) from error
            out().print(f"run {submission.run.run_id}: {passive} passive, then {active} active")
            run = wait_run(handle, submission.run.run_id, timeout)
            out().print(summary(run))
            if run.status.value != "SUCCESS":
                raise fail(f"resolution failed: {run.message}")
    out().print(f"group {key} settled: {active} is the active cluster")
