"""The health checker: heartbeats for every cluster and group, and automatic failover as intent.

Every ``heartbeatInterval`` of each FailoverGroup it finds on the configured clusters, it judges the
group on each cluster from the real objects (``fsm.health`` rules: PRIMARY on the active cluster,
STANDBY elsewhere), writes the heartbeat of each cluster that answered through the Coordination port,
then applies :func:`fsm.autofailover.decide_automatic_failover`. When that says so it creates a
``Failover`` object (``generateName: auto-<group>-``, labelled automatic) in a cluster that answers,
the target first: the watcher then submits it like any other. It never runs a step and never submits a
run itself.

A cluster that does not answer gets no heartbeat (its heartbeat going stale is how others learn it is
down); it is simply tried again on the next pass.

A site that came back: when a cluster other than the group's active one answers and still holds active
objects of the group (:func:`fsm.health.active_objects`) while no run holds the group's lock, the
checker asks :meth:`workers.api.Orchestrator.stand_down` to make it passive (deduplicated there per
ownership epoch) and logs the decision once (:func:`fsm.health.decide_stand_down`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from pydantic import ValidationError

from fsm.autofailover import (
    LABEL_AUTOMATIC,
    Action,
    HealthDecision,
    HealthInputs,
    decide_automatic_failover,
    is_automatic,
    next_error_since,
)
from fsm.forecast import HISTORY_DEPTH, forecast_mode, objective_of
from fsm.health import (
    ClusterRole,
    GroupHealth,
    Health,
    StandDownDecision,
    judge_group,
    unreachable,
)
from fsm.models import LABEL_GROUP, FailoverGroup, FailoverMode, GroupKey, ResourceRef, excerpt
from producers.decisions import describe, first_error
from producers.kube import FAILOVER_GROUPS, FAILOVERS, ClusterClient, Obj
from producers.standing_down import StandingDown
from workers.api import Orchestrator, history_epoch, set_heartbeat_age
from workers.errors import ConflictError, OrchestratorError, TemporaryError
from workers.ports import Heartbeat, HistoryRecord

log = structlog.get_logger(__name__)


def observe_group(client: ClusterClient, group: FailoverGroup, role: ClusterRole) -> GroupHealth:
    """Read every object of ``group`` on ``client``'s cluster and judge it (UNKNOWN if unreachable)."""
    return read_and_judge(client, group, role)[0]


def read_and_judge(
    client: ClusterClient, group: FailoverGroup, role: ClusterRole
) -> tuple[GroupHealth, dict[ResourceRef, Obj | None] | None]:
    """:func:`observe_group` and the objects read (None when they could not all be read)."""
    objects: dict[ResourceRef, Obj | None] = {}
    try:
        for ref in group.refs():
            objects[ref] = client.get_object(ref.kind, ref.namespace, ref.name)
    except TemporaryError as error:
        return unreachable(client.name, role, error.describe()), None
    except OrchestratorError as error:  # e.g. RBAC: the cluster answers but we cannot judge the group
        return (
            GroupHealth(
                client.name, role, Health.ERROR, (), f"cannot read the group's objects: {error.describe()}"
            ),
            None,
        )
    return judge_group(client.name, group, objects, role), objects


def _name_of(obj: object) -> str:
    """``namespace/name`` of an object as listed, however malformed (for logs)."""
    try:
        return excerpt(describe(obj), quote=False)  # type: ignore[arg-type]
    except Exception:
        return "?"


def parse_timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class _Seen:
    """What one pass found on the clusters about one group."""

    group: FailoverGroup
    clusters: set[str]


@dataclass(frozen=True)
class GroupOutcome:
    """One group's pass: the decision and, when one was created, the automatic Failover's name."""

    group: GroupKey
    decision: HealthDecision
    created: str | None = None
    created_in: str | None = None
    stand_downs: tuple[StandDownDecision, ...] = ()
    stood_down: tuple[str, ...] = ()  # run ids of the stand-downs this pass started


class HealthChecker(StandingDown):
    """Checks every group on every configured cluster; :meth:`run_once` is one pass (tests call it).

    Args:
        orchestrator: its ``coordination`` stores heartbeats and tells the active cluster.
        clusters: a client per configured cluster, by name.
        operator_id: only groups with this ``operatorID`` (None: every group).
        mode: the automatic Failover's ``failoverMode`` (UPTIME: the target serves before the
            source goes dark, as the earlier operator did).
        cooldown: seconds after an automatic failover of a group during which no other is created.
        clock: seconds since the epoch (``time.time``).
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        clusters: Mapping[str, ClusterClient],
        *,
        operator_id: str | None = None,
        mode: FailoverMode = FailoverMode.UPTIME,
        cooldown: float = 600.0,
        clock: Callable[[], float] = time.time,
        min_sleep: float = 0.5,
        max_sleep: float = 5.0,
    ) -> None:
        self.orchestrator = orchestrator
        self.clusters = dict(clusters)
        self.operator_id = operator_id
        self.mode = mode
        self.cooldown = cooldown
        self._time = clock
        self._min_sleep = min_sleep
        self._max_sleep = max_sleep
        self.started_at = self._time()
        self._error_since: dict[GroupKey, float | None] = {}
        self._created_at: dict[GroupKey, float] = {}
        self._next_due: dict[GroupKey, float] = {}
        self._last_reason: dict[GroupKey, str] = {}
        self._last_stand_down: dict[tuple[GroupKey, str], str] = {}
        # What went wrong with a group on the last pass (an invalid FailoverGroup by cluster and name,
        # a check that raised by group): logged once per distinct error, never stopping the others.
        self.errors: dict[str, str] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass --------------------------------------------------------------------------------

    def run_once(self, now: float | None = None, *, due_only: bool = False) -> list[GroupOutcome]:
        """Check every group (or, with ``due_only``, those whose ``heartbeatInterval`` has passed)."""
        now = self._time() if now is None else now
        seen, reachable, automatic = self._discover()
        outcomes = []
        for key, found in sorted(seen.items(), key=lambda item: str(item[0])):
            if due_only and self._next_due.get(key, 0.0) > now:
                continue
            self._next_due[key] = now + found.group.spec.heartbeat_interval.total_seconds()
            try:
                outcomes.append(self._check(key, found, reachable, automatic.get(key, []), now))
            except OrchestratorError as error:
                log.warning(
                    "health_check_failed",
                    group=str(key),
                    error=error.describe(),
                    next_action="checked again on the next pass",
                )
            except Exception as error:  # one broken group never stops the others' heartbeats
                self._error_once(f"group {key}", "health_check_error", repr(error), exc_info=True)
            else:
                self.errors.pop(f"group {key}", None)
        return outcomes

    def _error_once(self, what: str, event: str, error: str, *, exc_info: bool = False) -> None:
        """Record ``error`` as ``what``'s ERROR and log it, once until it changes."""
        error = excerpt(error, quote=False)
        if self.errors.get(what) == error:
            return
        self.errors[what] = error
        log.error(
            event, subject=what, error=error, next_action="the other groups carry on", exc_info=exc_info
        )

    def _discover(self) -> tuple[dict[GroupKey, _Seen], set[str], dict[GroupKey, list[Obj]]]:
        """Groups on every cluster that answers, and their automatic Failover objects."""
        seen: dict[GroupKey, _Seen] = {}
        reachable: set[str] = set()
        automatic: dict[GroupKey, list[Obj]] = {}
        labelled: list[Obj] = []
        for name, client in self.clusters.items():
            try:
                groups, _ = client.list(FAILOVER_GROUPS)
                failovers, _ = client.list(FAILOVERS, label_selector=f"{LABEL_AUTOMATIC}=true")
            except OrchestratorError as error:
                log.info("cluster_not_answering", cluster=name, error=error.describe())
                continue
            reachable.add(name)
            for obj in groups:
                what = f"FailoverGroup {_name_of(obj)} on {name}"
                try:
                    group = FailoverGroup.model_validate(obj)
                except ValidationError as error:
                    field, message = first_error(error)
                    self._error_once(what, "invalid_failover_group", f"{field}: {message}")
                    continue
                except Exception as error:  # a bug in validation must not stop every group's heartbeat
                    self._error_once(what, "invalid_failover_group", repr(error), exc_info=True)
                    continue
                self.errors.pop(what, None)
                if self.operator_id is not None and group.spec.operator_id != self.operator_id:
                    continue
                entry = seen.setdefault(group.key, _Seen(group, set()))
                entry.clusters.add(name)
                if group.spec.suspended and not entry.group.spec.suspended:
                    entry.group = group  # copies disagree (drift): suspended anywhere wins
            labelled.extend(failovers)
        for obj in labelled:
            meta = obj.get("metadata") or {}
            labels = meta.get("labels") if isinstance(meta, Mapping) else None
            if not isinstance(labels, Mapping):
                continue
            group_name, namespace = labels.get(LABEL_GROUP), meta.get("namespace")
            key = next((k for k in seen if k.name == group_name and k.namespace == namespace), None)
            if key is not None:
                automatic.setdefault(key, []).append(obj)
        return seen, reachable, automatic

    def _record(self, key: GroupKey, decision: HealthDecision, now: float) -> None:
        """Write the heartbeats the decision carries and log its reason when it changed."""
        for seen in decision.heartbeats:
            self.orchestrator.coordination.write_heartbeat(
                key, Heartbeat(seen.cluster, seen.health.value, seen.role.value, now, seen.summary())
            )
        if self._last_reason.get(key) != decision.reason:
            self._last_reason[key] = decision.reason
            log.info("health_decision", group=str(key), action=decision.action.value, reason=decision.reason)

    def _check(
        self, key: GroupKey, found: _Seen, reachable: set[str], automatic: list[Obj], now: float
    ) -> GroupOutcome:
        coordination = self.orchestrator.coordination
        active = coordination.active_cluster(key)
        group = found.group
        # Read before the clusters: a stand-down decided on objects read while another run finished
        # (the history moved on) is stale, and the orchestrator refuses it (``read_in``).
        history = coordination.history(key, limit=HISTORY_DEPTH)
        observations, read = self._observe(found, reachable, active)
        heartbeats = coordination.heartbeats(key)
        for beat in heartbeats:  # as this checker sees them: what the alert on a stale site reads
            set_heartbeat_age(str(key), beat.cluster, max(0.0, now - beat.at))
        lock = coordination.lock_info(key)
        diverged = found_divergence.reason if (found_divergence := coordination.divergence(key)) else None
        active_health = next(
            (o.health.value for o in observations if o.cluster == active and o.reachable),
            next((b.health for b in heartbeats if b.cluster == active), "UNKNOWN"),
        )
        self._error_since[key] = next_error_since(self._error_since.get(key), active_health, now)
        in_flight, last_automatic = self._automatic_state(key, automatic, history)
        decision = decide_automatic_failover(
            HealthInputs(
                group=group,
                now=now,
                clusters=list(self.clusters),
                observations=observations,
                heartbeats=heartbeats,
                active_cluster=active,
                watching_since=self.started_at,
                active_error_since=self._error_since[key],
                last_automatic_at=last_automatic,
                automatic_in_flight=in_flight,
                lock_holder=lock.run_id if lock is not None and lock.expires_at > now else None,
                diverged=diverged,
                mode=self.mode,
                cooldown=self.cooldown,
                # What the checker knows of the group's past names the automatic Failover, so that
                # two sites deciding the same thing create one object; any later history or
                # automatic Failover changes the name.
                epoch="|".join(
                    [
                        str(active),
                        history[0].run_id if history else "no-history",
                        *sorted(str((o.get("metadata") or {}).get("name")) for o in automatic),
                    ]
                ),
            )
        )
        self._record(key, decision, now)
        # A lock whose lease ran out belongs to a run that died: it no longer blocks a stand-down
        # (a stand-down takes the lock itself, so it cannot race a live run either way).
        live_lock = lock if lock is not None and lock.expires_at > now else None
        owner_health = next((o for o in observations if o.cluster == active), None)
        stand_downs, stood_down = self._stand_down(
            key,
            group,
            active,
            read,
            live_lock,
            owner_health=owner_health,
            diverged=diverged,
            now=now,
            read_in=history_epoch(history),
        )
        if decision.action is not Action.FAILOVER or decision.failover is None:
            return GroupOutcome(key, decision, stand_downs=stand_downs, stood_down=stood_down)
        predicted = forecast_mode(history, self.mode.value, objective_of(group))
        outcome = self._create_failover(key, decision, reachable, now, predicted=predicted.summary())
        return dataclasses.replace(outcome, stand_downs=stand_downs, stood_down=stood_down)

    def _observe(
        self, found: _Seen, reachable: set[str], active: str | None
    ) -> tuple[list[GroupHealth], dict[str, dict[ResourceRef, Obj | None]]]:
        """This pass's judgement of the group on every configured cluster, and the objects read on
        the clusters where all of them could be read (what a stand-down is decided on)."""
        observations = []
        read: dict[str, dict[ResourceRef, Obj | None]] = {}
        for name, client in self.clusters.items():
            role = ClusterRole.PRIMARY if name == active else ClusterRole.STANDBY
            if name not in reachable or name not in found.clusters:
                why = "did not answer" if name not in reachable else "the FailoverGroup is not there"
                observations.append(unreachable(name, role, why))
                continue
            observation, objects = read_and_judge(client, found.group, role)
            observations.append(observation)
            if objects is not None:
                read[name] = objects
        return observations, read

    def _automatic_state(
        self, key: GroupKey, automatic: list[Obj], history: Sequence[HistoryRecord]
    ) -> tuple[str | None, float | None]:
        """``(an unfinished automatic Failover's name, when the last automatic failover began)``."""
        in_flight = None
        times = [self._created_at[key]] if key in self._created_at else []
        for obj in automatic:
            meta = obj.get("metadata") or {}
            phase = (obj.get("status") or {}).get("status")
            if phase not in ("SUCCESS", "FAILED", "CANCELLED"):
                in_flight = in_flight or f"{meta.get('namespace')}/{meta.get('name')}"
            created = parse_timestamp(meta.get("creationTimestamp"))
            if created is not None:
                times.append(created)
        times.extend(record.started_at for record in history if is_automatic(record.reason))
        return in_flight, max(times, default=None)

    def _create_failover(
        self, key: GroupKey, decision: HealthDecision, reachable: set[str], now: float, *, predicted: str = ""
    ) -> GroupOutcome:
        assert decision.failover is not None
        target = decision.failover.target_cluster
        order = [target, *sorted(reachable - {target})]
        for name in order:
            client = self.clusters.get(name)
            if client is None or name not in reachable:
                continue
            try:
                created = client.create(FAILOVERS, key.namespace, decision.failover.manifest())
            except ConflictError:
                # Another site's checker decided the same failover first: the same name, one run.
                self._created_at[key] = now
                log.info(
                    "automatic_failover_exists", group=str(key), cluster=name, failover=decision.failover.name
                )
                return GroupOutcome(key, decision, decision.failover.name, name)
            except OrchestratorError as error:
                log.warning(
                    "automatic_failover_not_created",
                    group=str(key),
                    cluster=name,
                    error=error.describe(),
                    next_action="trying the next cluster that answers",
                )
                continue
            created_name = (created.get("metadata") or {}).get("name")
            self._created_at[key] = now
            log.warning(
                "automatic_failover_created",
                group=str(key),
                cluster=name,
                failover=created_name,
                target=target,
                force=decision.failover.force,
                reason=decision.failover.reason,
                predicted_rto=predicted,
            )
            return GroupOutcome(key, decision, created_name, name)
        log.error(
            "automatic_failover_not_created",
            group=str(key),
            reason=decision.reason,
            next_action="no cluster accepted the Failover; decided again on the next pass",
        )
        return GroupOutcome(key, decision)

    # --- running in the background ----------------------------------------------------------------

    def start(self) -> HealthChecker:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="health-checker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> HealthChecker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once(due_only=True)
            except Exception:  # never let one bad pass end the checker
                log.exception("health_pass_failed", next_action=f"next pass in {self._min_sleep:g}s")
            now = self._time()
            wait = min((due - now for due in self._next_due.values()), default=self._max_sleep)
            self._stopping.wait(max(self._min_sleep, min(self._max_sleep, wait)))
