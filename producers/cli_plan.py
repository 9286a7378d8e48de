"""The dry runs of ``failoverctl``: ``plan`` (what a Failover would change) and ``validate`` (does every
object of a group exist on every cluster). Both read the clusters and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from fsm.forecast import HISTORY_DEPTH, Forecast, group_forecast, seconds_text
from fsm.models import Failover, FailoverGroup, RequestError, check_namespace_grant, excerpt
from producers.cli_common import (
    ClusterOption,
    KubeconfigOption,
    Output,
    OutputOption,
    context_for,
    emit_json,
    fail,
    fetch_group,
    orchestrator,
    read_documents,
    read_manifest,
    settings_of,
    split_name,
)
from producers.decisions import first_error
from producers.kube import ClusterClient, kubeconfig_contexts
from workers.api import Orchestrator, PlanReport
from workers.errors import OrchestratorError
from workers.settings import Settings


@contextmanager
def _planner(settings: Settings, kubeconfig: Path | None) -> Iterator[Orchestrator]:
    """An Orchestrator whose cluster reads go through ``kubeconfig`` (default: the settings')."""
    if kubeconfig is not None:
        settings = settings.model_copy(update={"kubeconfig": str(kubeconfig)})
    with orchestrator(settings) as handle:
        yield handle


def _read_groups(file: Path) -> list[FailoverGroup]:
    documents = read_documents(file)
    groups = []
    for index, document in enumerate(documents):
        if not isinstance(document, dict) or document.get("kind") != "FailoverGroup":
            continue
        try:
            groups.append(FailoverGroup.model_validate(document))
        except ValidationError as error:
            field, message = first_error(error)
            raise fail(f"{file}: document {index + 1}: {field}: {message}") from error
    if not groups:
        raise fail(f"{file}: no FailoverGroup in it")
    return groups


def _print_cluster(report: PlanReport, cluster: str, role: str) -> None:
    echo = typer.echo
    echo("")
    echo(f"cluster {cluster} ({role}):")
    for step in report.steps:
        if step.cluster != cluster or step.skip_reason is not None:
            continue
        echo(f"  {step.step.value} [{step.stage}]")
        for change in step.changes:
            mark = "~" if change.changed else "="
            echo(f"    {mark} {change.ref}: {change.detail}")
        if step.checks:
            echo(f"    ? waits for {', '.join(step.checks)}")
        for problem in step.problems:
            echo(f"    ! {problem}")


def _print_plan(report: PlanReport) -> None:
    echo = typer.echo
    echo(f"Failover {report.failover}: group {report.group}, {report.mode}")
    echo(f"  from {report.source_cluster} (source) to {report.target_cluster} (target)")
    roles = {report.source_cluster: "source", report.target_cluster: "target"}
    for cluster in report.clusters():
        _print_cluster(report, cluster, roles.get(cluster, "?"))
    echo("")
    echo("coordination (DynamoDB):")
    for step in report.steps:
        if step.cluster is None and step.skip_reason is None:
            echo(f"  {step.step.value}: {step.description}")
    if report.skipped:
        echo("")
        echo("skipped:")
        for step in report.skipped:
            echo(f"  {step.step.value}: {step.skip_reason}")
    echo("")
    for note in report.notes:
        echo(f"note: {note}")
    echo(f"Plan: {report.summary()}. Nothing was changed.")


def _print_forecast(predicted: Forecast) -> None:
    """The predicted RTO per mode, from the group's own history (fsm.forecast)."""
    typer.echo(f"Predicted RTO (the group's last {HISTORY_DEPTH} history records, successful runs):")
    for mode in predicted.modes:
        typer.echo(f"  {mode.summary()}")
        for stage, quantiles in mode.stages:
            typer.echo(f"    {stage}: p50 {seconds_text(quantiles.p50)}, p95 {seconds_text(quantiles.p95)}")


def _groups_to_plan(
    file: Path, failover: Failover, group_file: Path | None, context: str | None, kubeconfig: Path | None
) -> list[FailoverGroup]:
    """The Failover's groups, from ``group_file`` or else read from the cluster ``context``."""
    wanted = failover.group_namespaces()
    if group_file is not None:
        found = {(g.metadata.namespace, g.metadata.name): g for g in _read_groups(group_file)}
        missing = [f"{ns}/{name}" for ns, name in wanted if (ns, name) not in found]
        if missing:
            raise fail(f"{group_file}: no FailoverGroup {excerpt(', '.join(missing), quote=False)} in it")
        return [found[key] for key in wanted]
    try:
        where = context_for(kubeconfig, context, failover.spec.target_cluster)
        client = ClusterClient.from_kubeconfig(kubeconfig, where)
        try:
            return [
                fetch_group(client, where, ns, name, f"{file}: spec.failoverGroups[{index}]")
                for index, (ns, name) in enumerate(wanted)
            ]
        finally:
            client.close()
    except OrchestratorError as error:
        raise fail(error.describe()) from error


def _exit_on_problems(problems: list[str]) -> None:
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)


def plan_command(
    ctx: typer.Context,
    *,
    file: Annotated[Path, typer.Option("--file", "-f", help="The Failover manifest (YAML; - for stdin)")],
    group_file: Annotated[
        Path | None,
        typer.Option("--group", "-g", help="FailoverGroup manifest(s) (default: read from --context)"),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context", help="Cluster to read the FailoverGroup(s) from (default: current context)"
        ),
    ] = None,
    kubeconfig: KubeconfigOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Show what a Failover would change, cluster by cluster and object by object. Changes nothing.

    Exits 1 when the plan found problems (a missing object, a cluster that does not answer)."""
    manifest = read_manifest(file)
    try:
        failover = Failover.model_validate(manifest)
    except ValidationError as error:
        field, message = first_error(error)
        raise fail(f"{file}: {field}: {message}") from error
    groups = _groups_to_plan(file, failover, group_file, context, kubeconfig)
    try:  # before the coordination store is read: a group of another namespace must grant this one
        for group in groups:
            check_namespace_grant(failover, group)
    except RequestError as error:
        raise fail(f"{file}: {error.field}: {error.message}") from error
    with _planner(settings_of(ctx), kubeconfig) as handle:
        try:
            reports = [handle.plan(failover, group) for group in groups]
        except RequestError as error:
            raise fail(f"{file}: {error.field}: {error.message}") from error
        forecasts = [group_forecast(g, handle.history(g.key, limit=HISTORY_DEPTH)) for g in groups]
    if output is Output.json:
        emit_json([{**r.to_dict(), "forecast": f.to_dict()} for r, f in zip(reports, forecasts, strict=True)])
    else:
        for index, (report, predicted) in enumerate(zip(reports, forecasts, strict=True)):
            if index:
                typer.echo("")
            _print_plan(report)
            _print_forecast(predicted)
    _exit_on_problems([str(problem) for report in reports for problem in report.problems])


def validate_command(
    ctx: typer.Context,
    *,
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    context: Annotated[
        str | None,
        typer.Option("--context", help="Cluster to read the FailoverGroup from (default: current context)"),
    ] = None,
    cluster: ClusterOption = None,
    kubeconfig: KubeconfigOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Check that every object of a FailoverGroup exists on every cluster; exit 1 listing what is not."""
    namespace, name = split_name(group)
    settings = settings_of(ctx)
    try:
        clusters = cluster or settings.clusters or kubeconfig_contexts(kubeconfig)
        where = context_for(kubeconfig, context, clusters[0] if clusters else None)
        client = ClusterClient.from_kubeconfig(kubeconfig, where)
        try:
            found = fetch_group(client, where, namespace, name, excerpt(group, quote=False))
        finally:
            client.close()
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    with _planner(settings, kubeconfig) as handle:
        problems = handle.validate(found, list(clusters))
    count = len([*found.workload_refs(), *found.volume_refs(), *found.network_refs(), *found.flux_refs()])
    if output is Output.json:
        emit_json(
            {
                "group": group,
                "clusters": list(clusters),
                "objects": count,
                "problems": [p.to_dict() for p in problems],
            }
        )
    elif not problems:
        typer.echo(f"group {group}: all {count} objects found on every cluster ({', '.join(clusters)})")
    _exit_on_problems([str(problem) for problem in problems])
