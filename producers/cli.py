"""``failoverctl``: the operator's command line. It submits intent and reads state; it never runs steps.

Errors are one clear line on stderr (what, where, what to do) with exit code 1; usage errors exit 2.
Read commands take ``--output json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from fsm.graph import dot, mermaid
from fsm.models import Failover, FailoverGroup, FailoverMode, GroupKey
from fsm.run import Run
from producers.decisions import first_error
from producers.health import HealthChecker
from producers.kube import (
    FAILOVER_GROUPS,
    FAILOVERS,
    ClusterClient,
    connect,
    current_context,
    kubeconfig_contexts,
)
from producers.views import run_view, summary
from producers.watcher import FailoverWatcher
from workers.api import (
    Orchestrator,
    PlanReport,
    RequestError,
    configure_logging,
    liveness,
    start_metrics_server,
)
from workers.errors import OrchestratorError
from workers.settings import Settings

app = typer.Typer(
    help="Move applications between Kubernetes clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dynamodb_app = typer.Typer(
    help="The DynamoDB table that holds locks, owners and history.", no_args_is_help=True
)
lock_app = typer.Typer(help="Inspect or release a group's lock.", no_args_is_help=True)
app.add_typer(dynamodb_app, name="dynamodb")
app.add_typer(lock_app, name="lock")


def out() -> Console:
    """A console per command, so that the terminal's width (or COLUMNS) is read when it prints."""
    return Console()


class ModeChoice(StrEnum):
    consistency = "consistency"
    uptime = "uptime"


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table or json")]
OperatorOption = Annotated[
    str | None, typer.Option("--operator-id", help="operatorID of the group (default: settings)")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def orchestrator() -> Iterator[Orchestrator]:
    try:
        with Orchestrator(Settings()) as handle:
            yield handle
    except OrchestratorError as error:
        raise fail(error.describe()) from error


def group_key(group: str, operator_id: str | None, settings: Settings | None = None) -> GroupKey:
    namespace, _, name = group.partition("/")
    if not namespace or not name or "/" in name:
        raise fail(f"group {group!r}: expected NAMESPACE/NAME", 2)
    return GroupKey(
        operator_id=operator_id or (settings or Settings()).operator_id, namespace=namespace, name=name
    )


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    png = "png"


@app.command()
def graph(
    mode: Annotated[ModeChoice, typer.Option("--mode", "-m", help="Which mode's machine to draw.")],
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="mermaid, dot or png")
    ] = GraphFormat.mermaid,
    output_file: Annotated[
        Path | None, typer.Option("--output-file", "-o", help="Write here (png needs it)")
    ] = None,
) -> None:
    """Print (or write) the state machine of a failover mode: Mermaid by default, DOT, or a PNG."""
    kind = FailoverMode(mode.value.upper())
    if format is GraphFormat.png:
        if output_file is None:
            raise fail("--format png writes a file: give --output-file FILE.png", 2)
        if shutil.which("dot") is None:
            raise fail(
                "a PNG needs Graphviz's dot: install it (apt-get install graphviz) or use --format mermaid"
            )
        subprocess.run(["dot", "-Tpng", "-o", str(output_file)], input=dot(kind), text=True, check=True)
        out().print(f"wrote {output_file}")
        return
    text = mermaid(kind) if format is GraphFormat.mermaid else dot(kind)
    if output_file is not None:
        output_file.write_text(text)
        out().print(f"wrote {output_file}")
    else:
        typer.echo(text)


@app.command()
def status(
    failover: Annotated[
        str | None, typer.Argument(help="NAMESPACE/NAME of a Failover (default: recent runs)")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many recent runs")] = 20,
    output: OutputOption = Output.table,
) -> None:
    """The runs of one Failover, or the most recent runs, with their state and times."""
    with orchestrator() as handle:
        runs = handle.runs(failover=failover, limit=limit)
    if output is Output.json:
        _emit_json([run.model_dump(mode="json") for run in runs])
        return
    table = Table(title="runs")
    for column in (
        "run",
        "failover",
        "group",
        "mode",
        "from → to",
        "status",
        "state",
        "started",
        "took",
        "message",
    ):
        table.add_column(column)
    for run in runs:
        took = run.total_seconds()
        table.add_row(
            run.run_id,
            run.failover,
            str(run.group),
            run.kind.value,
            f"{run.source_cluster} → {run.target_cluster}",
            run.status.value,
            run.state_name,
            _when(run.started_at),
            f"{took:.1f}s" if took is not None else "",
            run.message,
        )
    out().print(table)


@app.command()
def watch(
    target: Annotated[str, typer.Argument(help="A run id, or NAMESPACE/NAME of a Failover")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes")] = 0.5,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds (0: never)")] = 0.0,
) -> None:
    """Follow a run (or every run of a Failover) live: stages, steps, timings and the current wait."""
    from rich.console import Group
    from rich.live import Live

    with orchestrator() as handle:

        def runs() -> list[Run]:
            found = handle.runs(failover=target) if "/" in target else [r for r in [handle.run(target)] if r]
            if not found:
                raise fail(f"no run {target!r} in Redis (give a run id, or NAMESPACE/NAME of a Failover)")
            return found

        current = runs()
        deadline = time.monotonic() + timeout if timeout > 0 else None
        with Live(Group(*[run_view(r) for r in current]), console=out(), refresh_per_second=4) as live:
            while not all(r.terminal for r in current):
                if deadline is not None and time.monotonic() > deadline:
                    raise fail(f"still running after {timeout:g}s", 1)
                time.sleep(interval)
                current = runs()
                live.update(Group(*[run_view(r) for r in current]))
    for run in current:
        out().print(summary(run))
    if any(r.status.value == "FAILED" for r in current):
        raise typer.Exit(1)


@app.command()
def history(
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    operator_id: OperatorOption = None,
    limit: Annotated[int, typer.Option(help="How many records, newest first")] = 20,
    output: OutputOption = Output.table,
) -> None:
    """The group's finished failovers, newest first, from DynamoDB."""
    key = group_key(group, operator_id)
    with orchestrator() as handle:
        records = handle.history(key, limit=limit)
    if output is Output.json:
        _emit_json([record.__dict__ for record in records])
        return
    table = Table(title=f"history of {key}")
    for column in (
        "started",
        "outcome",
        "mode",
        "from → to",
        "took",
        "downtime",
        "failed step",
        "run",
        "reason",
    ):
        table.add_column(column)
    for r in records:
        table.add_row(
            _when(r.started_at),
            r.outcome,
            r.mode,
            f"{r.source_cluster} → {r.target_cluster}",
            f"{r.finished_at - r.started_at:.1f}s",
            f"{r.downtime_seconds:.1f}s" if r.downtime_seconds is not None else "",
            r.failed_step or "",
            r.run_id,
            r.reason or r.message,
        )
    out().print(table)


@lock_app.command("show")
def lock_show(
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    operator_id: OperatorOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Who holds the group's lock, with which fencing token, until when."""
    key = group_key(group, operator_id)
    with orchestrator() as handle:
        info = handle.lock(key)
    if output is Output.json:
        _emit_json(info.__dict__ if info else None)
        return
    if info is None:
        out().print(f"group {key} is not locked")
        return
    out().print(
        f"group {key} is locked by {info.holder} for run {info.run_id} (token {info.token}) "
        f"since {_when(info.acquired_at)} until {_when(info.expires_at)} UTC"
    )


@lock_app.command("release")
def lock_release(
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    reason: Annotated[str, typer.Option(help="Why (recorded in history)")],
    operator_id: OperatorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Release a group's lock by hand. The run holding it stops at its next step (its lease is lost)."""
    key = group_key(group, operator_id)
    with orchestrator() as handle:
        info = handle.lock(key)
        if info is None:
            out().print(f"group {key} is not locked")
            return
        if not yes:
            typer.confirm(
                f"Release the lock of {key} held by {info.holder} for run {info.run_id}? "
                "That run will stop at its next step",
                abort=True,
            )
        who = os.environ.get("USER") or "failoverctl"
        handle.release_lock(key, by=who, reason=reason)
    out().print(f"released the lock of {key} (run {info.run_id}, token {info.token}); recorded in history")


@dynamodb_app.command("init")
def dynamodb_init() -> None:
    """Create the DynamoDB table if it does not exist, wait until it is active, enable its TTL."""
    settings = Settings()
    with orchestrator() as handle:
        handle.init_table()
    out().print(f"table {settings.dynamodb_table!r} is ready")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[
        str | None, typer.Option("--queues", "-Q", help="Queues to consume (default: settings).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
) -> None:
    """Start a Celery worker for the failover steps (extra arguments go to ``celery worker``)."""
    settings = Settings()
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.tasks",
        "worker",
        "--loglevel",
        settings.log_level,
        "-Q",
        queues or settings.queue,
        "--concurrency",
        str(concurrency),
        *ctx.args,
    ]
    os.execv(sys.executable, command)


@app.command()
def demo() -> None:
    """Run failovers end to end on local stand-ins: two sandbox clusters, Redis, DynamoDB, a worker.

    Starts what it needs (Redis only if none answers at REDIS_URL), runs a CONSISTENCY failover and
    an UPTIME failback with a live view, prints the measured times and the final state of both
    clusters, and stops everything it started.
    """
    # The sandbox is never imported by the product: the demo runs as a program of its own, in this
    # process (exec), so that Ctrl-C and SIGTERM reach it and it stops everything it started.
    os.execv(sys.executable, [sys.executable, "-m", "sandbox.demo"])


sandbox_app = typer.Typer(help="Local stand-ins for the outside world.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("up")
def sandbox_up() -> None:
    """Start two sandbox clusters, Redis, DynamoDB and a worker, print how to reach them, wait for Ctrl-C."""
    os.execv(sys.executable, [sys.executable, "-m", "sandbox.demo", "--up"])


# --- producers: the watcher, the health checker and `submit` ----------------------------------------

KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        envvar="FAILOVER_KUBECONFIG",
        help="kubeconfig with one context per cluster (default: ~/.kube/config)",
    ),
]
ClusterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cluster",
        help="A cluster (kubeconfig context) to use; repeat for each (default: FAILOVER_CLUSTERS, "
        "else every context of the kubeconfig)",
    ),
]


class _Background(Protocol):
    def start(self) -> object: ...

    def stop(self, timeout: float = ...) -> None: ...


@contextmanager
def _cluster_clients(kubeconfig: Path | None, clusters: list[str]) -> Iterator[dict[str, ClusterClient]]:
    try:
        clients = connect(kubeconfig, clusters)
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def _in_foreground(component: _Background, what: str, clusters: list[str]) -> None:
    """Run ``component`` until Ctrl-C or SIGTERM, then stop it cleanly."""
    settings = Settings()
    configure_logging(json=settings.log_json, level=settings.log_level)
    if settings.metrics_port:
        start_metrics_server(settings.metrics_port)
    stopping = threading.Event()
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    except ValueError:  # not the main thread (e.g. under a test runner): Ctrl-C still works
        previous = None
    component.start()
    out().print(f"{what} running on {', '.join(clusters)}; Ctrl-C stops it")
    try:
        while not stopping.wait(0.5):
            # The liveness probe reads this file; the component's own threads log their failures.
            liveness.touch()
    except KeyboardInterrupt:
        pass
    finally:
        component.stop(5.0)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    out().print(f"{what} stopped")


@app.command("watcher")
def watcher_command(
    kubeconfig: KubeconfigOption = None,
    cluster: ClusterOption = None,
    group_status_interval: Annotated[
        float, typer.Option(help="Seconds between FailoverGroup status refreshes")
    ] = 30.0,
) -> None:
    """Watch Failover objects on every cluster and submit them (in the foreground; Ctrl-C stops)."""
    settings = Settings()
    with _cluster_clients(kubeconfig, cluster or settings.clusters) as clients, orchestrator() as handle:
        component = FailoverWatcher(
            handle, clients, operator_id=settings.operator_id, group_status_interval=group_status_interval
        )
        _in_foreground(component, "watcher", list(clients))


@app.command("health-checker")
def health_checker_command(
    kubeconfig: KubeconfigOption = None,
    cluster: ClusterOption = None,
    mode: Annotated[
        ModeChoice, typer.Option("--mode", help="failoverMode of automatic Failovers")
    ] = ModeChoice.uptime,
    cooldown: Annotated[
        float, typer.Option(help="Seconds after an automatic failover before another one of the group")
    ] = 600.0,
) -> None:
    """Write heartbeats and create automatic Failovers (in the foreground; Ctrl-C stops)."""
    settings = Settings()
    with _cluster_clients(kubeconfig, cluster or settings.clusters) as clients, orchestrator() as handle:
        component = HealthChecker(
            handle,
            clients,
            operator_id=settings.operator_id,
            mode=FailoverMode(mode.value.upper()),
            cooldown=cooldown,
        )
        _in_foreground(component, "health checker", list(clients))


def _read_manifest(file: Path) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"{file}: cannot read it: {str(error).splitlines()[0]}") from error
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise fail(f"{file}: expected exactly one Failover object, found {len(documents)} document(s)")
    manifest: dict[str, Any] = documents[0]
    if manifest.get("kind", "Failover") != "Failover":
        raise fail(f"{file}: kind: expected Failover, got {manifest.get('kind')!r}")
    return manifest


@app.command("submit")
def submit_command(
    file: Annotated[Path, typer.Option("--file", "-f", help="The Failover manifest (YAML; - for stdin)")],
    context: Annotated[
        str | None,
        typer.Option("--context", help="Cluster (kubeconfig context) to create it in (default: the target)"),
    ] = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Create a Failover object in a cluster: the watcher submits it. Validated first; nothing is
    created when it is invalid."""
    manifest = _read_manifest(file)
    meta = dict(manifest.get("metadata") or {})
    checked = dict(manifest)
    if not meta.get("name") and meta.get("generateName"):
        checked["metadata"] = {**meta, "name": f"{meta['generateName']}x"}  # the server names it
    try:
        failover = Failover.model_validate(checked)
    except ValidationError as error:
        field, message = first_error(error)
        raise fail(f"{file}: {field}: {message}") from error
    try:
        contexts = kubeconfig_contexts(kubeconfig)
        clusters = Settings().clusters or contexts
        target = failover.spec.target_cluster
        if target not in clusters:
            raise fail(
                f"{file}: spec.targetCluster: unknown cluster {target!r}; known clusters are "
                f"{', '.join(clusters) or 'none'}"
            )
        where = context or (target if target in contexts else current_context(kubeconfig))
        if where not in contexts:
            raise fail(f"--context {where!r}: no such context in the kubeconfig ({', '.join(contexts)})", 2)
        namespace = failover.metadata.namespace
        body = {**manifest, "apiVersion": failover.api_version, "kind": "Failover"}
        body["metadata"] = {**meta, "namespace": namespace}
        body.pop("status", None)
        client = ClusterClient.from_kubeconfig(kubeconfig, where)
        try:
            created = client.create(FAILOVERS, namespace, body)
        finally:
            client.close()
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    name = (created.get("metadata") or {}).get("name")
    out().print(f"failover {namespace}/{name} created in cluster {where}; the watcher submits it")


# --- dry runs: `plan` and `validate` -------------------------------------------------------------------


@contextmanager
def _planner(kubeconfig: Path | None) -> Iterator[Orchestrator]:
    """An Orchestrator whose cluster reads go through ``kubeconfig`` (default: the settings')."""
    settings = Settings(kubeconfig=str(kubeconfig)) if kubeconfig is not None else Settings()
    try:
        with Orchestrator(settings) as handle:
            yield handle
    except OrchestratorError as error:
        raise fail(error.describe()) from error


def _read_groups(file: Path) -> list[FailoverGroup]:
    try:
        documents = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"{file}: cannot read it: {str(error).splitlines()[0]}") from error
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


def _fetch_group(client: ClusterClient, where: str, namespace: str, name: str, label: str) -> FailoverGroup:
    raw = client.find(FAILOVER_GROUPS, namespace, name)
    if raw is None:
        raise fail(f"{label}: FailoverGroup {namespace}/{name} does not exist in cluster {where}")
    try:
        return FailoverGroup.model_validate(raw)
    except ValidationError as error:
        field, message = first_error(error)
        raise fail(
            f"{label}: FailoverGroup {namespace}/{name} in cluster {where} is invalid: {field}: {message}"
        ) from error


def _context_for(kubeconfig: Path | None, context: str | None, fallback: str | None) -> str:
    contexts = kubeconfig_contexts(kubeconfig)
    where = context or current_context(kubeconfig) or fallback
    if where is None or where not in contexts:
        raise fail(f"--context {where!r}: no such context in the kubeconfig ({', '.join(contexts)})", 2)
    return where


def _print_plan(report: PlanReport) -> None:
    echo = typer.echo
    echo(f"Failover {report.failover}: group {report.group}, {report.mode}")
    echo(f"  from {report.source_cluster} (source) to {report.target_cluster} (target)")
    roles = {report.source_cluster: "source", report.target_cluster: "target"}
    for cluster in report.clusters():
        echo("")
        echo(f"cluster {cluster} ({roles.get(cluster, '?')}):")
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


@app.command("plan")
def plan_command(
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
    manifest = _read_manifest(file)
    try:
        failover = Failover.model_validate(manifest)
    except ValidationError as error:
        field, message = first_error(error)
        raise fail(f"{file}: {field}: {message}") from error
    wanted = failover.group_namespaces()
    if group_file is not None:
        found = {(g.metadata.namespace, g.metadata.name): g for g in _read_groups(group_file)}
        missing = [f"{ns}/{name}" for ns, name in wanted if (ns, name) not in found]
        if missing:
            raise fail(f"{group_file}: no FailoverGroup {', '.join(missing)} in it")
        groups = [found[key] for key in wanted]
    else:
        try:
            where = _context_for(kubeconfig, context, failover.spec.target_cluster)
            client = ClusterClient.from_kubeconfig(kubeconfig, where)
            try:
                groups = [
                    _fetch_group(client, where, ns, name, f"{file}: spec.failoverGroups[{index}]")
                    for index, (ns, name) in enumerate(wanted)
                ]
            finally:
                client.close()
        except OrchestratorError as error:
            raise fail(error.describe()) from error
    with _planner(kubeconfig) as handle:
        try:
            reports = [handle.plan(failover, group) for group in groups]
        except RequestError as error:
            raise fail(f"{file}: {error.field}: {error.message}") from error
    if output is Output.json:
        _emit_json([report.to_dict() for report in reports])
    else:
        for index, report in enumerate(reports):
            if index:
                typer.echo("")
            _print_plan(report)
    problems = [problem for report in reports for problem in report.problems]
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)


@app.command("validate")
def validate_command(
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
    namespace, _, name = group.partition("/")
    if not namespace or not name or "/" in name:
        raise fail(f"group {group!r}: expected NAMESPACE/NAME", 2)
    try:
        contexts = kubeconfig_contexts(kubeconfig)
        clusters = cluster or Settings().clusters or contexts
        where = _context_for(kubeconfig, context, clusters[0] if clusters else None)
        client = ClusterClient.from_kubeconfig(kubeconfig, where)
        try:
            found = _fetch_group(client, where, namespace, name, group)
        finally:
            client.close()
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    with _planner(kubeconfig) as handle:
        problems = handle.validate(found, list(clusters))
    count = len([*found.workload_refs(), *found.volume_refs(), *found.network_refs(), *found.flux_refs()])
    if output is Output.json:
        _emit_json(
            {
                "group": group,
                "clusters": list(clusters),
                "objects": count,
                "problems": [p.to_dict() for p in problems],
            }
        )
    elif not problems:
        typer.echo(f"group {group}: all {count} objects found on every cluster ({', '.join(clusters)})")
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
