"""Dry runs: what a Failover would change, object by object and cluster by cluster, changing nothing.

:func:`plan_failover` walks ``fsm.plan.build_plan`` for the Failover's mode and, for every effect
step, previews on that step's cluster the change its effect would make to each object
(:meth:`workers.kube.KubeEffects.preview`: the same pure rules as ``make_passive``/``make_active``);
wait and coordination steps are listed with what they will check. :func:`validate_group` checks that
every object a group references exists on every cluster. Both only read.

The preview is taken from the objects as they are now. Within one run, no object is touched by two
effect steps on the same cluster (the source is only made passive, the target only active, and each
kind belongs to one step), so each preview is exactly what its step will find, unless someone else
changes the object in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fsm.models import Failover, FailoverGroup, ResourceRef
from fsm.plan import CATALOGUE, PlanKind, Side, Step, StepType, build_plan
from fsm.run import Resources
from workers.errors import ClusterUnreachable, NotFoundError, OrchestratorError
from workers.kube import KubeEffects
from workers.ports import Change, ClusterEffects, Role

# What the Flux reconcile request will be set to: the run's own start time, unknown before it starts.
REQUESTED_AT_PLACEHOLDER = "<time of the run>"
EPOCH_NOTE = "every changed object is also stamped failover.hahomelabs.com/epoch=<the run's fencing token>"


@dataclass(frozen=True)
class Problem:
    """Something that would make the real run fail: a missing object, a cluster that does not answer."""

    cluster: str
    message: str
    ref: ResourceRef | None = None

    def __str__(self) -> str:
        where = f"{self.ref} on cluster {self.cluster}" if self.ref else f"cluster {self.cluster}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "object": str(self.ref) if self.ref else None,
            "message": self.message,
        }


@dataclass(frozen=True)
class StepPlan:
    """One step of the plan: where it runs, why it is skipped, what it would change or check."""

    step: Step
    type: StepType
    stage: str
    side: Side
    cluster: str | None
    description: str
    skip_reason: str | None = None
    changes: tuple[Change, ...] = ()
    checks: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step.value,
            "kind": self.type.value,
            "stage": self.stage,
            "side": self.side.value,
            "cluster": self.cluster,
            "description": self.description,
            "skipReason": self.skip_reason,
            "changes": [change_dict(c) for c in self.changes],
            "checks": list(self.checks),
            "problems": [p.to_dict() for p in self.problems],
        }


def change_dict(change: Change) -> dict[str, Any]:
    return {
        "cluster": change.cluster,
        "object": str(change.ref),
        "kind": change.ref.kind,
        "namespace": change.ref.namespace,
        "name": change.ref.name,
        "action": change.action,
        "changed": change.changed,
        "change": change.detail,
    }


@dataclass(frozen=True)
class PlanReport:
    """The whole dry run of one Failover for one group."""

    failover: str
    group: str
    mode: str
    source_cluster: str
    target_cluster: str
    steps: tuple[StepPlan, ...]
    notes: tuple[str, ...] = field(default=(EPOCH_NOTE,))

    @property
    def changes(self) -> list[Change]:
        return [c for s in self.steps for c in s.changes]

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.steps for p in s.problems]

    @property
    def skipped(self) -> list[StepPlan]:
        return [s for s in self.steps if s.skip_reason is not None]

    def clusters(self) -> list[str]:
        """The clusters the plan acts on, in the order it first acts on them."""
        seen: list[str] = []
        for s in self.steps:
            if s.cluster is not None and s.cluster not in seen:
                seen.append(s.cluster)
        return seen

    def by_cluster(self) -> dict[str, list[tuple[Step, Change]]]:
        """Each cluster's previewed changes (changed or not), in plan order, with their step."""
        out: dict[str, list[tuple[Step, Change]]] = {c: [] for c in self.clusters()}
        for s in self.steps:
            for change in s.changes:
                out.setdefault(change.cluster, []).append((s.step, change))
        return out

    def summary(self) -> str:
        changed = sum(1 for c in self.changes if c.changed)
        unchanged = len(self.changes) - changed
        text = (
            f"{self.mode} {self.group} from {self.source_cluster} to {self.target_cluster}: "
            f"{changed} to change, {unchanged} already as wanted, {len(self.skipped)} step(s) skipped"
        )
        if self.problems:
            text += f", {len(self.problems)} problem(s)"
        return text

    def status_plan(self) -> list[dict[str, Any]]:
        """``status.plan`` of a dry-run Failover: per cluster, the objects that would change and how."""
        return [
            {
                "group": self.group,
                "cluster": cluster,
                "changes": [
                    {"step": step.value, "object": str(c.ref), "change": c.detail}
                    for step, c in changes
                    if c.changed
                ],
            }
            for cluster, changes in self.by_cluster().items()
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "failover": self.failover,
            "group": self.group,
            "mode": self.mode,
            "sourceCluster": self.source_cluster,
            "targetCluster": self.target_cluster,
            "summary": self.summary(),
            "steps": [s.to_dict() for s in self.steps],
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
        }


def unusable(effects: ClusterEffects, cluster: str) -> str | None:
    """Why ``cluster`` cannot be asked anything (no connection settings for it), or None."""
    if isinstance(effects, KubeEffects):
        try:
            effects.clients.api_client(cluster)
        except OrchestratorError as error:
            return error.message
    return None


class _Reader:
    """Reads through ``effects`` and remembers the clusters that did not answer, asking them no more."""

    def __init__(self, effects: KubeEffects, clusters: Sequence[str]) -> None:
        self.effects = effects
        self.down: dict[str, str] = {}
        for cluster in clusters:
            why = unusable(effects, cluster)
            if why is not None:
                self.down[cluster] = why

    def replicas(self, clusters: Sequence[str], refs: Sequence[ResourceRef]) -> dict[str, int]:
        """The fallback replica counts as the run's validate step records them (the last cluster wins)."""
        counts: dict[str, int] = {}
        for cluster in clusters:
            for ref in refs:
                if cluster in self.down:
                    break
                try:
                    seen = self.effects.observe(cluster, ref)
                except ClusterUnreachable as error:
                    self.down[cluster] = f"did not answer: {error.message}"
                    break
                except OrchestratorError:
                    continue  # reported by the step's own preview
                if seen.replicas is not None:
                    counts[ref.name] = seen.replicas
        return counts

    def preview(
        self,
        cluster: str,
        refs: Sequence[ResourceRef],
        role: Role,
        resources: Resources,
        counts: dict[str, int],
    ) -> tuple[tuple[Change, ...], tuple[Problem, ...]]:
        changes: list[Change] = []
        problems: list[Problem] = []
        for ref in refs:
            if cluster in self.down:
                problems.append(Problem(cluster, self.down[cluster]))
                break
            requested_at = REQUESTED_AT_PLACEHOLDER if resources.reconciled(ref) else None
            try:
                changes.append(
                    self.effects.preview(
                        cluster, ref, role, replicas=counts.get(ref.name), requested_at=requested_at
                    )
                )
            except ClusterUnreachable as error:
                self.down[cluster] = f"did not answer: {error.message}"
                problems.append(Problem(cluster, self.down[cluster]))
                break
            except NotFoundError:
                problems.append(Problem(cluster, "not found", ref))
            except OrchestratorError as error:
                problems.append(Problem(cluster, error.message, ref))
        return tuple(changes), tuple(problems)


def plan_failover(
    failover: Failover, group: FailoverGroup, *, source_cluster: str, effects: KubeEffects
) -> PlanReport:
    """The dry run of ``failover`` for ``group``, currently active on ``source_cluster``.

    Pure apart from reading the objects through ``effects``: nothing is written anywhere. A cluster
    that does not answer, or an object that is missing, becomes a :class:`Problem` on the steps that
    needed it (the real run would fail there, or skip the source's steps under ``force``).
    """
    mode = failover.spec.failover_mode
    target = failover.spec.target_cluster
    resources = Resources.of(group)
    reader = _Reader(effects, [source_cluster, target])
    # As the validate step: the source's count wins, the target's remembered count is the fallback.
    counts = reader.replicas([target, source_cluster], resources.workloads)
    steps = []
    for planned in build_plan(PlanKind.of(mode), group):
        # The same catalogue entry the real step runs from: its objects and the role it moves them to.
        info = CATALOGUE[planned.step]
        cluster = {Side.SOURCE: source_cluster, Side.TARGET: target}.get(planned.side)
        changes: tuple[Change, ...] = ()
        checks: tuple[str, ...] = ()
        problems: tuple[Problem, ...] = ()
        if planned.skip_reason is None and cluster is not None and info.role is not None:
            refs = resources.select(info.objects)
            if info.type is StepType.EFFECT:
                changes, problems = reader.preview(cluster, refs, info.role, resources, counts)
            else:
                checks = tuple(f"{ref} {info.role.value}" for ref in refs)
        steps.append(
            StepPlan(
                step=planned.step,
                type=info.type,
                stage=planned.stage.value,
                side=planned.side,
                cluster=cluster,
                description=info.description,
                skip_reason=planned.skip_reason,
                changes=changes,
                checks=checks,
                problems=problems,
            )
        )
    return PlanReport(
        failover=f"{failover.metadata.namespace}/{failover.metadata.name}",
        group=f"{group.metadata.namespace}/{group.metadata.name}",
        mode=mode.value,
        source_cluster=source_cluster,
        target_cluster=target,
        steps=tuple(steps),
    )


def validate_group(group: FailoverGroup, clusters: Sequence[str], effects: ClusterEffects) -> list[Problem]:
    """Whether every object ``group`` references exists on every one of ``clusters``. Only reads.

    A missing object is a problem naming kind, namespace/name and cluster; a cluster that does not
    answer is one problem naming it (its other objects are not tried); any other error (RBAC, a CRD
    that is not installed, no connection settings) is a problem with its message.
    """
    problems: list[Problem] = []
    refs = group.refs()
    for cluster in clusters:
        why = unusable(effects, cluster)
        if why is not None:
            problems.append(Problem(cluster, why))
            continue
        for ref in refs:
            try:
                seen = effects.observe(cluster, ref)
            except ClusterUnreachable as error:
                problems.append(Problem(cluster, f"did not answer: {error.message}"))
                break
            except OrchestratorError as error:
                problems.append(Problem(cluster, error.message, ref))
                continue
            if not seen.exists:
                problems.append(Problem(cluster, "not found", ref))
    return problems
