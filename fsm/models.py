"""The two custom resources, ``Failover`` and ``FailoverGroup``, as pydantic models.

Pure: these models only validate and describe data. They read no clock, no environment and no
cluster; whoever loads a manifest (the watcher, the CLI, a test) passes the dict in and gets either a
model or a :class:`pydantic.ValidationError` whose ``loc`` names the offending field.

Field names and enums follow ``docs/API.md`` so that manifests written for the earlier Go
operator stay valid; Python attributes are snake_case, the wire names are the API's camelCase.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections import Counter
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

API_GROUP = "crd.hahomelabs.com"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

ANNOTATION_REPLICAS = "failover.hahomelabs.com/replicas"
ANNOTATION_EPOCH = "failover.hahomelabs.com/epoch"
# The fence of a group on one cluster (an annotation of its FailoverGroup there; it only grows), and the
# label with which every object the orchestrator writes names its group (deploy/fencing reads both).
ANNOTATION_FENCE = "failover.hahomelabs.com/fence"
LABEL_GROUP = "failover.hahomelabs.com/group"


class FailoverMode(StrEnum):
    CONSISTENCY = "CONSISTENCY"
    UPTIME = "UPTIME"


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    CRON_JOB = "CronJob"


class NetworkKind(StrEnum):
    VIRTUAL_SERVICE = "VirtualService"
    INGRESS = "Ingress"


class FluxKind(StrEnum):
    HELM_RELEASE = "HelmRelease"
    KUSTOMIZATION = "Kustomization"


VOLUME_REPLICATION = "VolumeReplication"

# --- quoting hostile input ------------------------------------------------------------------------

# An error message quotes at most this many characters of what it was given (a name, a duration, a
# YAML value): a 1 MB string in a manifest must not become a 1 MB condition, log line or terminal line.
EXCERPT_LIMIT = 200

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 8, 8, 8, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = EXCERPT_LIMIT, EXCERPT_LIMIT, EXCERPT_LIMIT


def excerpt(value: object, *, quote: bool = True, limit: int = EXCERPT_LIMIT) -> str:
    """``value`` as an error message shows it: at most ``limit`` characters of it, then an ellipsis.

    The one helper for every place that echoes input. Strings are quoted (``repr``) unless ``quote`` is
    false (a field path, a message already built); other values go through a bounded ``reprlib``, so
    a deeply nested or huge value neither recurses nor grows the message. Pure.
    """
    if isinstance(value, str):
        cut = value[:limit]
        shown = repr(cut) if quote else cut
        more = len(value) - len(cut)
    else:
        try:
            shown = _REPR.repr(value)
        except ValueError:  # an int past Python's digit limit for str()
            shown = f"<{type(value).__name__} too large to show>"
        more = max(0, len(shown) - limit)
        shown = shown[:limit]
    shown = " ".join(shown.splitlines()) if "\n" in shown or "\r" in shown else shown
    return f"{shown}… ({more} more characters)" if more else shown


# --- durations --------------------------------------------------------------------------------------

# The longest duration a spec may ask for (every timeout and interval of the API): a week is far above
# any real timeout, and a bound keeps arithmetic on deadlines away from overflow.
MAX_DURATION = timedelta(days=7)
MAX_DURATION_TEXT = "168h"
# The longest duration text accepted ("1h30m45.5s" is 10): checked before the text is parsed.
MAX_DURATION_LENGTH = 64

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> timedelta:
    """Parse a Go-style duration (``90s``, ``5m``, ``1h30m``) or a number of seconds.

    Pure. Raises ``ValueError`` quoting (an excerpt of) the offending value, which pydantic reports
    against the field. A duration must be positive (at least a microsecond) and at most
    :data:`MAX_DURATION`; the bound is checked before a ``timedelta`` is built, so no input overflows.
    """
    if isinstance(value, timedelta):
        return _bounded(value.total_seconds(), value)
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '5m' or '30s', got {excerpt(value)}")
    if isinstance(value, int | float):
        return _bounded(value, value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a duration such as '5m' or '30s', got {excerpt(value)}")
    if len(value) > MAX_DURATION_LENGTH:
        raise ValueError(f"a duration is at most {MAX_DURATION_LENGTH} characters long, got {excerpt(value)}")
    text = value.strip()
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValueError(
            f"malformed duration {excerpt(value)}: expected a Go duration such as '5m', '90s' or '1h30m'"
        )
    return _bounded(seconds, value)


def _bounded(seconds: float, value: object) -> timedelta:
    """``seconds`` as a timedelta if it is a positive duration within :data:`MAX_DURATION`."""
    # Compared before any conversion: an int of 400 digits is too long, not an OverflowError.
    if seconds > MAX_DURATION.total_seconds() or (isinstance(seconds, float) and not math.isfinite(seconds)):
        raise ValueError(f"a duration is at most {MAX_DURATION_TEXT} (7 days), got {excerpt(value)}")
    if seconds <= 0 or (duration := timedelta(seconds=float(seconds))) <= timedelta(0):
        raise ValueError(f"a duration must be positive (at least 1us), got {excerpt(value)}")
    return duration


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go prints durations (``5m0s`` style is avoided: ``5m``, ``90s``)."""
    total = round(value.total_seconds(), 3)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{int(hours)}h")
    if minutes:
        parts.append(f"{int(minutes)}m")
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class ApiModel(BaseModel):
    """Base for API objects: camelCase on the wire, unknown spec fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ObjectMeta(BaseModel):
    """The parts of ``metadata`` the orchestrator reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(default="default", min_length=1, max_length=63)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ResourceRef(BaseModel):
    """One Kubernetes object by kind, namespace and name: the unit every effect acts on."""

    model_config = ConfigDict(frozen=True)

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class GroupKey(BaseModel):
    """Identifies a FailoverGroup across clusters and in DynamoDB (``GROUP#op#ns#name``)."""

    model_config = ConfigDict(frozen=True)

    operator_id: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


# --- FailoverGroup -------------------------------------------------------------------------------


class Timeouts(ApiModel):
    transitory_state: Duration = timedelta(minutes=5)
    unhealthy_primary: Duration = timedelta(minutes=2)
    heartbeat: Duration = timedelta(minutes=1)


# A Kubernetes namespace name (an RFC 1123 label), as a reference to one is written.
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=NAMESPACE_PATTERN)]
# An object's name (at most a DNS subdomain's 253 characters).
Name = Annotated[str, Field(min_length=1, max_length=253)]


class Workload(ApiModel):
    kind: WorkloadKind
    name: Name
    volume_replications: list[Name] = Field(default_factory=list)


class NetworkResource(ApiModel):
    kind: NetworkKind
    name: Name


class FluxResource(ApiModel):
    kind: FluxKind
    name: Name
    trigger_reconcile: StrictBool = False


class FailoverGroupSpec(ApiModel):
    operator_id: str = Field(alias="operatorID", min_length=1, max_length=253)
    suspended: StrictBool = False
    suspension_reason: str = Field(default="", max_length=4096)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    heartbeat_interval: Duration = timedelta(seconds=30)
    workloads: list[Workload] = Field(default_factory=list)
    network_resources: list[NetworkResource] = Field(default_factory=list)
    flux_resources: list[FluxResource] = Field(default_factory=list)
    # New (not in the Go operator): namespaces whose Failovers may move this group, besides its own
    # (in the spirit of Gateway API's ReferenceGrant: the referenced side grants the reference).
    allowed_failover_namespaces: list[Namespace] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _names_unique(self) -> FailoverGroupSpec:
        seen: set[tuple[str, str]] = set()
        items: list[Workload | NetworkResource | FluxResource] = [
            *self.workloads,
            *self.network_resources,
            *self.flux_resources,
        ]
        for item in items:
            key = (str(item.kind), item.name)
            if key in seen:
                raise ValueError(f"{item.kind} {excerpt(item.name)} is listed twice")
            seen.add(key)
        counts = Counter(v for w in self.workloads for v in w.volume_replications)  # linear, not n²
        duplicates = sorted(v for v, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"VolumeReplication {excerpt(duplicates[0])} belongs to more than one workload")
        return self


class FailoverGroup(ApiModel):
    """A set of resources that move together. Status is written by the orchestrator, not read."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["crd.hahomelabs.com/v1alpha1"] = "crd.hahomelabs.com/v1alpha1"
    kind: Literal["FailoverGroup"] = "FailoverGroup"
    metadata: ObjectMeta
    spec: FailoverGroupSpec
    status: dict[str, Any] | None = None

    @property
    def key(self) -> GroupKey:
        return GroupKey(
            operator_id=self.spec.operator_id,
            namespace=self.metadata.namespace,
            name=self.metadata.name,
        )

    def workload_refs(self) -> list[ResourceRef]:
        ns = self.metadata.namespace
        return [ResourceRef(kind=w.kind, namespace=ns, name=w.name) for w in self.spec.workloads]

    def volume_refs(self) -> list[ResourceRef]:
        ns = self.metadata.namespace
        return [
            ResourceRef(kind=VOLUME_REPLICATION, namespace=ns, name=v)
            for w in self.spec.workloads
            for v in w.volume_replications
        ]

    def network_refs(self) -> list[ResourceRef]:
        ns = self.metadata.namespace
        return [ResourceRef(kind=n.kind, namespace=ns, name=n.name) for n in self.spec.network_resources]

    def flux_refs(self) -> list[ResourceRef]:
        ns = self.metadata.namespace
        return [ResourceRef(kind=f.kind, namespace=ns, name=f.name) for f in self.spec.flux_resources]

    def refs(self) -> list[ResourceRef]:
        """Every object the group references: workloads, volumes, network, Flux (the order they are
        judged, shown and validated in)."""
        return [*self.workload_refs(), *self.volume_refs(), *self.network_refs(), *self.flux_refs()]


# --- Failover ------------------------------------------------------------------------------------


class GroupReference(ApiModel):
    name: Name
    namespace: Namespace | None = None


class FailoverSpec(ApiModel):
    # The bounds are also what the API server needs to estimate the cost of the CRD's CEL rule.
    target_cluster: str = Field(min_length=1, max_length=253)
    failover_mode: FailoverMode
    force: StrictBool = False
    reason: str = Field(default="", max_length=4096)
    failover_groups: list[GroupReference] = Field(min_length=1, max_length=100)
    dry_run: StrictBool = False

    @field_validator("failover_groups")
    @classmethod
    def _groups_unique(cls, groups: list[GroupReference]) -> list[GroupReference]:
        seen: set[tuple[str | None, str]] = set()
        for group in groups:
            if (group.namespace, group.name) in seen:
                raise ValueError(f"group {excerpt(group.name)} is listed twice")
            seen.add((group.namespace, group.name))
        return groups


class Failover(ApiModel):
    """A one-shot request to move groups to ``spec.targetCluster``."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["crd.hahomelabs.com/v1alpha1"] = "crd.hahomelabs.com/v1alpha1"
    kind: Literal["Failover"] = "Failover"
    metadata: ObjectMeta
    spec: FailoverSpec
    status: dict[str, Any] | None = None

    def group_namespaces(self) -> list[tuple[str, str]]:
        """Each requested group as ``(namespace, name)``, defaulting to the Failover's namespace."""
        return [(g.namespace or self.metadata.namespace, g.name) for g in self.spec.failover_groups]


class RequestError(ValueError):
    """A request that cannot run as asked; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def group_index(failover: Failover, group: FailoverGroup) -> int | None:
    """Where ``group`` is in ``failover.spec.failoverGroups`` (None: the Failover does not name it)."""
    wanted = (group.metadata.namespace, group.metadata.name)
    return next((i for i, ref in enumerate(failover.group_namespaces()) if ref == wanted), None)


def check_namespace_grant(failover: Failover, group: FailoverGroup) -> None:
    """A Failover may move groups of its own namespace, and those of another namespace that grants it.

    A group grants the namespaces listed in its ``spec.allowedFailoverNamespaces`` (like Gateway API's
    ReferenceGrant, the referenced side decides): whoever may create Failovers in ``victim`` must not
    be able to move the groups of ``payments``. Pure. Raises :class:`RequestError` naming
    ``spec.failoverGroups[i].namespace``.
    """
    own = failover.metadata.namespace
    namespace = group.metadata.namespace
    if namespace == own or own in group.spec.allowed_failover_namespaces:
        return
    index = group_index(failover, group)
    field = "spec.failoverGroups" if index is None else f"spec.failoverGroups[{index}].namespace"
    raise RequestError(
        field,
        f"FailoverGroup {namespace}/{excerpt(group.metadata.name, quote=False)} does not allow "
        f"Failovers from namespace {own!r}: a Failover may name groups of its own namespace, or of a "
        f"namespace whose group lists {own!r} in spec.allowedFailoverNamespaces",
    )


def check_request(
    failover: Failover,
    group: FailoverGroup,
    *,
    active_cluster: str | None,
    known_clusters: frozenset[str] | None = None,
) -> None:
    """Check what the schema alone cannot: the group's grant of the Failover's namespace
    (:func:`check_namespace_grant`), then the target against the group's current owner.

    Pure: the caller reads the active cluster (from DynamoDB) and the configured clusters and passes
    them in. Raises :class:`RequestError` naming the field.
    """
    check_namespace_grant(failover, group)
    target = failover.spec.target_cluster
    if known_clusters is not None and target not in known_clusters:
        raise RequestError(
            "spec.targetCluster",
            f"unknown cluster {excerpt(target)}; configured clusters are {', '.join(sorted(known_clusters))}",
        )
    if active_cluster is None:
        raise RequestError(
            "spec.failoverGroups",
            f"group {group.metadata.namespace}/{group.metadata.name} has no active cluster recorded; "
            "set its first owner explicitly before failing it over: "
            f"`failoverctl group adopt {group.metadata.namespace}/{group.metadata.name}`",
        )
    if target == active_cluster:
        raise RequestError(
            "spec.targetCluster",
            f"{target!r} is already the active cluster of group "
            f"{group.metadata.namespace}/{group.metadata.name}",
        )
