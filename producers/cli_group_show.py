"""``failoverctl group show NS/GROUP``: what is known about one group, in one place: its owner (the
active cluster) from DynamoDB, its lock and fencing token, a divergence if any, what each cluster
holds (active and passive objects, the fence on its FailoverGroup, its last heartbeat) and its last
failovers from history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from fsm.adoption import ClusterEvidence, judge_cluster, unreachable_cluster
from fsm.health import ClusterRole, GroupHealth, judge_group
from fsm.models import ANNOTATION_FENCE, FailoverGroup, GroupKey, ResourceRef
from producers.cli_common import (
    ClusterOption,
    KubeconfigOption,
    OperatorOption,
    Output,
    OutputOption,
    emit_json,
    fail,
    group_key,
    orchestrator,
    settings_of,
    split_name,
    when,
)
from producers.decisions import first_error
from producers.health import read_and_judge
from producers.kube import FAILOVER_GROUPS, ClusterClient, Obj, connect, kubeconfig_contexts
from workers.api import Orchestrator
from workers.errors import OrchestratorError


def _read_cluster(client: ClusterClient, namespace: str, name: str) -> tuple[dict[str, Any] | None, str]:
    """The FailoverGroup object on one cluster (None) and why not, in words."""
    try:
        raw = client.find(FAILOVER_GROUPS, namespace, name)
    except OrchestratorError as error:
        return None, error.describe()
    return (dict(raw), "") if raw is not None else (None, "the FailoverGroup is not there")


# The objects read on a cluster (None: they could not all be read).
Read = dict[ResourceRef, Obj | None] | None


def _clusters(
    kubeconfig: Path | None, clusters: list[str], namespace: str, name: str, label: str
) -> tuple[FailoverGroup, list[ClusterEvidence], dict[str, str], dict[str, Read]]:
    """The group (from the first cluster that has it), each cluster's evidence, fence and objects."""
    try:
        clients = connect(kubeconfig, clusters)
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    try:
        raws = {n: _read_cluster(c, namespace, name) for n, c in clients.items()}
        first = next((raw for raw, _ in raws.values() if raw is not None), None)
        if first is None:
            why = "; ".join(f"{n}: {why}" for n, (_, why) in raws.items())
            raise fail(f"{label}: no FailoverGroup {namespace}/{name} on any cluster ({why})")
        try:
            group = FailoverGroup.model_validate(first)
        except ValidationError as error:
            field, message = first_error(error)
            raise fail(f"{label}: FailoverGroup {namespace}/{name} is invalid: {field}: {message}") from error
        evidence: list[ClusterEvidence] = []
        fences: dict[str, str] = {}
        read: dict[str, Read] = {}
        for n, client in clients.items():
            raw, why = raws[n]
            read[n] = None
            if raw is None:
                evidence.append(unreachable_cluster(n, why))
                continue
            fences[n] = str(((raw.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_FENCE, ""))
            health, objects = read_and_judge(client, group, ClusterRole.STANDBY)
            read[n] = dict(objects) if objects is not None else None
            seen = judge_cluster(n, group, objects) if objects is not None else None
            evidence.append(seen or unreachable_cluster(n, health.detail))
        return group, evidence, fences, read
    finally:
        for client in clients.values():
            client.close()


def _health(group: FailoverGroup, owner: str | None, read: dict[str, Read]) -> dict[str, GroupHealth]:
    """Each readable cluster's health, judged against the role the owner gives it (the owner PRIMARY,
    the others STANDBY), as the health checker judges it; none without an owner."""
    if owner is None:
        return {}
    return {
        n: judge_group(n, group, objects, ClusterRole.PRIMARY if n == owner else ClusterRole.STANDBY)
        for n, objects in read.items()
        if objects is not None
    }


def _health_text(health: GroupHealth | None) -> str:
    if health is None:
        return ""
    detail = f": {health.detail}" if health.detail and health.health.value != "OK" else ""
    return f", health {health.health.value} as {health.role.value}{detail}"


def _state(handle: Orchestrator, key: GroupKey, limit: int) -> dict[str, Any]:
    lock = handle.lock(key)
    divergence = handle.divergence(key)
    return {
        "owner": handle.owner(key),
        "lock": lock.__dict__ if lock else None,
        "divergence": divergence.__dict__ if divergence else None,
        "heartbeats": {
            b.cluster: {"health": b.health, "role": b.role, "at": b.at}
            for b in handle.coordination.heartbeats(key)
        },
        "history": [record.__dict__ for record in handle.history(key, limit=limit)],
    }


def _print(
    key: GroupKey,
    state: dict[str, Any],
    evidence: list[ClusterEvidence],
    fences: dict[str, str],
    health: dict[str, GroupHealth],
) -> None:
    say = typer.echo
    owner = state["owner"]
    say(f"group {key}")
    adopt = f"failoverctl group adopt {key.namespace}/{key.name}"
    say(f"  owner:      {owner}" if owner else f"  owner:      none recorded; adopt it with `{adopt}`")
    lock = state["lock"]
    say(
        f"  lock:       held by {lock['holder']} for run {lock['run_id']}, fencing token {lock['token']}, "
        f"expires {when(lock['expires_at'])} UTC"
        if lock
        else "  lock:       free",
    )
    divergence = state["divergence"]
    if divergence:
        detail = f" (seen: {divergence['detail']})" if divergence["detail"] else ""
        say(f"  diverged:   {divergence['reason']}{detail}")
    say("  clusters:")
    for seen in evidence:
        beat = state["heartbeats"].get(seen.cluster)
        beat_text = f", heartbeat {beat['health']} at {when(beat['at'])}" if beat else ""
        fence = f", fence {fences[seen.cluster]}" if fences.get(seen.cluster) else ""
        say(f"    {seen.describe()}{fence}{_health_text(health.get(seen.cluster))}{beat_text}")
    say("  last failovers:")
    for record in state["history"] or []:
        moved = " → ".join(c for c in (record["source_cluster"], record["target_cluster"]) if c)
        words = [when(record["started_at"]), record["outcome"], record["mode"], moved]
        words.append(record["reason"] or record["message"])
        say("    " + " ".join(w for w in words if w))
    if not state["history"]:
        say("    none")


def show_command(
    ctx: typer.Context,
    *,
    group: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the FailoverGroup")],
    cluster: ClusterOption = None,
    kubeconfig: KubeconfigOption = None,
    operator_id: OperatorOption = None,
    limit: Annotated[int, typer.Option(help="How many history records, newest first")] = 5,
    output: OutputOption = Output.table,
) -> None:
    """Show a group: its owner, lock, divergence, what each cluster holds, its last failovers.

    The owner (active cluster) and the lock with its fencing token come from DynamoDB; each cluster's
    objects are judged active or passive by the rules of their kind, with the fence and heartbeat."""
    settings = settings_of(ctx)
    namespace, name = split_name(group)
    clusters = list(cluster or settings.clusters or kubeconfig_contexts(kubeconfig))
    found, evidence, fences, read = _clusters(kubeconfig, clusters, namespace, name, group)
    key = group_key(group, operator_id or found.spec.operator_id, settings)
    with orchestrator(settings) as handle:
        state = _state(handle, key, limit)
    health = _health(found, state["owner"], read)
    if output is Output.json:
        clusters_json = [
            {
                **seen.as_dict(),
                "fence": fences.get(seen.cluster) or None,
                "heartbeat": state["heartbeats"].get(seen.cluster),
                "health": _health_json(health.get(seen.cluster)),
            }
            for seen in evidence
        ]
        emit_json(
            {
                "group": f"{namespace}/{name}",
                "operatorID": key.operator_id,
                **state,
                "clusters": clusters_json,
            }
        )
        return
    _print(key, state, evidence, fences, health)


def _health_json(health: GroupHealth | None) -> dict[str, str] | None:
    if health is None:
        return None
    return {"health": health.health.value, "role": health.role.value, "detail": health.detail}
