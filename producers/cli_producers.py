"""``failoverctl`` commands of the producers: ``watcher`` and ``health-checker`` in the foreground, and
``submit``, which creates a Failover object for the watcher to pick up."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

import structlog
import typer
from pydantic import ValidationError

from fsm.models import Failover, FailoverGroup, FailoverMode, RequestError, check_namespace_grant, excerpt
from producers.cli_common import (
    ClusterOption,
    KubeconfigOption,
    ModeChoice,
    fail,
    fetch_group,
    orchestrator,
    out,
    read_manifest,
    require_run_key,
    settings_of,
)
from producers.decisions import first_error
from producers.health import HealthChecker
from producers.kube import FAILOVERS, ClusterClient, connect, current_context, kubeconfig_contexts
from producers.waker import WaitWaker
from producers.watcher import FailoverWatcher
from workers.api import configure_logging, liveness, start_metrics_server
from workers.errors import ConflictError, OrchestratorError
from workers.settings import Settings


class _Background(Protocol):
    def start(self) -> object: ...

    def stop(self, timeout: float = ...) -> None: ...


class _Together:
    """Components started and stopped as one (the watcher and its waker)."""

    def __init__(self, *parts: _Background) -> None:
        self.parts = parts

    def start(self) -> _Together:
        for part in self.parts:
            part.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        for part in reversed(self.parts):
            part.stop(timeout)


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


def say(settings: Settings, text: str) -> None:
    """A line for whoever started a long-running command: printed, or with JSON logs one log event
    (so that every line of the component's output is JSON)."""
    if settings.log_json:
        structlog.get_logger(__name__).info(text)
    else:
        out().print(text)


def _in_foreground(component: _Background, what: str, clusters: list[str], settings: Settings) -> None:
    """Run ``component`` until Ctrl-C or SIGTERM, then stop it cleanly."""
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
    say(settings, f"{what} running on {', '.join(clusters)}; Ctrl-C stops it")
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
    say(settings, f"{what} stopped")


def watcher_command(
    ctx: typer.Context,
    kubeconfig: KubeconfigOption = None,
    cluster: ClusterOption = None,
    group_status_interval: Annotated[
        float, typer.Option(help="Seconds between FailoverGroup status refreshes")
    ] = 30.0,
) -> None:
    """Watch Failover objects on every cluster and submit them (in the foreground; Ctrl-C stops)."""
    settings = settings_of(ctx)
    with (
        _cluster_clients(kubeconfig, cluster or settings.clusters) as clients,
        orchestrator(settings) as handle,
    ):
        require_run_key(settings)
        handle.open_coordination()
        component: _Background = FailoverWatcher(
            handle,
            clients,
            operator_id=settings.operator_id,
            group_status_interval=group_status_interval,
            status_interval=settings.status_interval,
        )
        if settings.wake_waits:
            # Waits woken by watch events (producers.waker): a client per cluster and kind.
            waker = WaitWaker(
                handle.wakes(), list(clients), lambda name: ClusterClient.from_kubeconfig(kubeconfig, name)
            )
            component = _Together(component, waker)
        _in_foreground(component, "watcher", list(clients), settings)


def health_checker_command(
    ctx: typer.Context,
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
    settings = settings_of(ctx)
    with (
        _cluster_clients(kubeconfig, cluster or settings.clusters) as clients,
        orchestrator(settings) as handle,
    ):
        require_run_key(settings)
        handle.open_coordination()
        component = HealthChecker(
            handle,
            clients,
            operator_id=settings.operator_id,
            mode=FailoverMode(mode.value.upper()),
            cooldown=cooldown,
        )
        _in_foreground(component, "health checker", list(clients), settings)


def _validated(file: Path, manifest: dict[str, Any]) -> Failover:
    """The manifest as a Failover; a generateName stands in for the name the server gives it."""
    meta = manifest.get("metadata")
    checked = dict(manifest)
    if isinstance(meta, dict) and not meta.get("name") and isinstance(meta.get("generateName"), str):
        checked["metadata"] = {**meta, "name": f"{meta['generateName']}x"}  # the server names it
    try:
        return Failover.model_validate(checked)
    except ValidationError as error:
        field, message = first_error(error)
        raise fail(f"{file}: {field}: {message}") from error


def _where(
    file: Path, failover: Failover, *, context: str | None, kubeconfig: Path | None, clusters: list[str]
) -> str:
    """The cluster to create the Failover in (``context``, default: its target), once its target is
    known to be one of the configured clusters."""
    contexts = kubeconfig_contexts(kubeconfig)
    known = clusters or contexts
    target = failover.spec.target_cluster
    if target not in known:
        raise fail(
            f"{file}: spec.targetCluster: unknown cluster {excerpt(target)}; known clusters are "
            f"{', '.join(known) or 'none'}"
        )
    where = context or (target if target in contexts else current_context(kubeconfig))
    if where not in contexts:
        raise fail(
            f"--context {excerpt(where)}: no such context in the kubeconfig ({', '.join(contexts)})", 2
        )
    return where


def _groups_in(file: Path, client: ClusterClient, where: str, failover: Failover) -> list[FailoverGroup]:
    """The Failover's groups as the watcher of ``where`` will read them, each granting its namespace."""
    groups = [
        fetch_group(client, where, ns, name, f"{file}: spec.failoverGroups[{index}]")
        for index, (ns, name) in enumerate(failover.group_namespaces())
    ]
    try:
        for group in groups:
            check_namespace_grant(failover, group)
    except RequestError as error:
        raise fail(f"{file}: {error.field}: {error.message}") from error
    return groups


def _check_owners(
    file: Path, settings: Settings, failover: Failover, groups: list[FailoverGroup], known: list[str]
) -> None:
    """Refuse what the watcher would refuse: a target that already owns a group, a group without an
    owner (each group's active cluster is read through the Orchestrator, as the watcher reads it)."""
    with orchestrator(settings) as handle:
        for index, group in enumerate(groups):
            try:
                handle.source_for(failover, group, known_clusters=frozenset(known) or None)
            except RequestError as error:
                field = error.field
                if field == "spec.failoverGroups":
                    field = f"spec.failoverGroups[{index}]"
                raise fail(f"{file}: {field}: {error.message}") from error


def _create_in(
    file: Path,
    manifest: dict[str, Any],
    failover: Failover,
    *,
    where: str,
    kubeconfig: Path | None,
    settings: Settings,
    known: list[str],
) -> str:
    """Check the request against the groups and owners, then create the Failover in ``where``;
    returns its name."""
    namespace = failover.metadata.namespace
    body = {**manifest, "apiVersion": failover.api_version, "kind": "Failover"}
    body["metadata"] = {**dict(manifest.get("metadata") or {}), "namespace": namespace}
    body.pop("status", None)
    client = ClusterClient.from_kubeconfig(kubeconfig, where)
    try:
        groups = _groups_in(file, client, where, failover)
        _check_owners(file, settings, failover, groups, known)
        try:
            created = client.create(FAILOVERS, namespace, body)
        except ConflictError as error:
            raise fail(_exists(file, namespace, failover.metadata.name, where)) from error
    finally:
        client.close()
    return str((created.get("metadata") or {}).get("name"))


def _exists(file: Path, namespace: str, name: str, where: str) -> str:
    return (
        f"{file}: Failover {namespace}/{name} already exists in cluster {where}: see it with "
        f"`failoverctl status {namespace}/{name}` or `kubectl --context {where} get failover -n "
        f"{namespace} {name}`; a Failover is one request: to ask again, give it a new name"
    )


def submit_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="The Failover manifest (YAML; - for stdin)")],
    context: Annotated[
        str | None,
        typer.Option("--context", help="Cluster (kubeconfig context) to create it in (default: the target)"),
    ] = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Create a Failover object in a cluster: the watcher submits it.

    Validated first (the manifest, each group's grant of its namespace, the target against each
    group's active cluster); nothing is created when it is invalid."""
    manifest = read_manifest(file)
    failover = _validated(file, manifest)
    settings = settings_of(ctx)
    try:
        where = _where(file, failover, context=context, kubeconfig=kubeconfig, clusters=settings.clusters)
        known = settings.clusters or kubeconfig_contexts(kubeconfig)
        name = _create_in(
            file, manifest, failover, where=where, kubeconfig=kubeconfig, settings=settings, known=known
        )
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    namespace = failover.metadata.namespace
    out().print(f"failover {namespace}/{name} created in cluster {where}; the watcher submits it")
