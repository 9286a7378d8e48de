"""The resource kinds a sandbox cluster serves, and the registry that resolves them.

Built-in kinds (core, apps, batch, networking.k8s.io, rbac, admissionregistration, apiextensions) are
declared here; every other kind comes from a ``CustomResourceDefinition`` object in the cluster's
store, exactly as on a real server. The third-party CRDs the product needs (Istio, Flux, csi-addons,
the project's own) are described by :func:`default_crds` so a cluster can pre-install them. This
module only describes kinds; it must not store objects or speak HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

# Field selectors a real server accepts beyond metadata.name/metadata.namespace; anything else is a 400.
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


@dataclass(frozen=True)
class ResourceKind:
    """One served resource (``deployments.apps``) with its versions and subresources."""

    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    singular: str
    namespaced: bool = True
    status: bool = True
    scale: bool = False
    builtin: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    field_selectors: tuple[str, ...] = ()
    printer_columns: tuple[dict[str, Any], ...] = ()
    generation: bool = True

    @property
    def key(self) -> str:
        """Storage key shared by all versions: ``deployments.apps`` (``pods`` for core)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f"{self.group}/{version}" if self.group else version


def _builtin(group: str, kind: str, plural: str, **kw: Any) -> ResourceKind:
    return ResourceKind(group=group, versions=("v1",), kind=kind, plural=plural, singular=kind.lower(), **kw)


BUILTIN_KINDS: tuple[ResourceKind, ...] = (
    _builtin(
        "",
        "Namespace",
        "namespaces",
        namespaced=False,
        short_names=("ns",),
        field_selectors=("status.phase",),
        generation=False,
    ),
    _builtin(
        "",
        "Pod",
        "pods",
        short_names=("po",),
        categories=("all",),
        field_selectors=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
    ),
    _builtin(
        "",
        "Event",
        "events",
        status=False,
        short_names=("ev",),
        field_selectors=_EVENT_FIELDS,
        generation=False,
    ),
    _builtin("", "ServiceAccount", "serviceaccounts", status=False, short_names=("sa",), generation=False),
    _builtin("apps", "Deployment", "deployments", scale=True, short_names=("deploy",), categories=("all",)),
    _builtin("apps", "StatefulSet", "statefulsets", scale=True, short_names=("sts",), categories=("all",)),
    _builtin("apps", "ReplicaSet", "replicasets", scale=True, short_names=("rs",), categories=("all",)),
    _builtin("batch", "CronJob", "cronjobs", short_names=("cj",), categories=("all",)),
    _builtin("batch", "Job", "jobs", categories=("all",), field_selectors=("status.successful",)),
    _builtin("networking.k8s.io", "Ingress", "ingresses", short_names=("ing",)),
    # Admission policies are plain objects the admission chain reads on every write (admission.py).
    _builtin(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        namespaced=False,
        categories=("api-extensions",),
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        namespaced=False,
        status=False,
        categories=("api-extensions",),
    ),
    # RBAC objects: the authorizer (rbac.py) reads them on every request, like the real RBAC authorizer.
    _builtin("rbac.authorization.k8s.io", "Role", "roles", status=False, generation=False),
    _builtin(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        namespaced=False,
        status=False,
        generation=False,
    ),
    _builtin("rbac.authorization.k8s.io", "RoleBinding", "rolebindings", status=False, generation=False),
    _builtin(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        namespaced=False,
        status=False,
        generation=False,
    ),
    _builtin(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
    ),
)


def kind_from_crd(crd: dict[str, Any]) -> ResourceKind:
    """The served kind a CRD object declares (served versions only, storage version first)."""
    spec = crd["spec"]
    names = spec["names"]
    versions = [v for v in spec.get("versions", []) if v.get("served", True)]
    versions.sort(key=lambda v: not v.get("storage", False))
    status = any("status" in (v.get("subresources") or {}) for v in versions)
    columns: list[dict[str, Any]] = []
    if versions:
        columns = list(versions[0].get("additionalPrinterColumns") or [])
    return ResourceKind(
        group=spec["group"],
        versions=tuple(v["name"] for v in versions),
        kind=names["kind"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        status=status,
        builtin=False,
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        printer_columns=tuple(columns),
    )


class KindRegistry:
    """Thread-safe map of served kinds; CRDs are added and removed while the server runs."""

    def __init__(self, kinds: Iterable[ResourceKind] = BUILTIN_KINDS) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, ResourceKind] = {k.key: k for k in kinds}

    def add(self, kind: ResourceKind) -> None:
        with self._lock:
            self._kinds[kind.key] = kind

    def remove(self, key: str) -> None:
        with self._lock:
            self._kinds.pop(key, None)

    def all(self) -> list[ResourceKind]:
        with self._lock:
            return list(self._kinds.values())

    def by_key(self, key: str) -> ResourceKind | None:
        with self._lock:
            return self._kinds.get(key)

    def find(self, group: str, version: str, plural: str) -> ResourceKind | None:
        """The kind served at ``/apis/<group>/<version>/<plural>``, if that version is served."""
        kind = self.by_key(f"{plural}.{group}" if group else plural)
        if kind is None or version not in kind.versions:
            return None
        return kind

    def for_api_version(self, api_version: str, kind_name: str) -> ResourceKind | None:
        group, _, version = api_version.rpartition("/")
        for kind in self.all():
            if kind.group == group and kind.kind == kind_name and version in kind.versions:
                return kind
        return None

    def resolve(self, ref: str | ResourceKind) -> ResourceKind:
        """Resolve ``Deployment``, ``deployments``, ``deployments.apps``, ``deploy`` or a short name."""
        if isinstance(ref, ResourceKind):
            return ref
        exact = self.by_key(ref)
        if exact is not None:
            return exact
        lowered = ref.lower()
        matches = [k for k in self.all() if lowered in (k.kind.lower(), k.plural, k.singular, *k.short_names)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise KeyError(f"no served kind matches {ref!r}")
        raise KeyError(f"{ref!r} is ambiguous: {', '.join(sorted(k.key for k in matches))}")

    def groups(self) -> dict[str, list[str]]:
        """Served group -> versions (preferred first), core group excluded, in a stable order."""
        out: dict[str, list[str]] = {}
        for kind in sorted(self.all(), key=lambda k: k.group):
            if not kind.group:
                continue
            versions = out.setdefault(kind.group, [])
            for version in kind.versions:
                if version not in versions:
                    versions.append(version)
        return out


@dataclass(frozen=True)
class CrdSpec:
    """Compact description of a third-party CRD the sandbox can pre-install."""

    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = field(default=())

    def manifest(self) -> dict[str, Any]:
        """A CustomResourceDefinition object, open schema (the sandbox does not prune fields)."""
        columns = [{"name": name, "type": "string", "jsonPath": path} for name, path in self.columns]
        columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{self.plural}.{self.group}"},
            "spec": {
                "group": self.group,
                "scope": "Namespaced",
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.kind.lower(),
                    **({"shortNames": list(self.short_names)} if self.short_names else {}),
                },
                "versions": [
                    {
                        "name": version,
                        "served": True,
                        "storage": index == 0,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": columns,
                    }
                    for index, version in enumerate(self.versions)
                ],
            },
        }


def default_crds() -> list[dict[str, Any]]:
    """CRDs for the third-party kinds the orchestrator touches, plus Failover and FailoverGroup."""
    specs = [
        CrdSpec("networking.istio.io", "VirtualService", "virtualservices", ("v1", "v1beta1"), ("vs",)),
        CrdSpec(
            "helm.toolkit.fluxcd.io",
            "HelmRelease",
            "helmreleases",
            ("v2",),
            ("hr",),
            (("Ready", '.status.conditions[?(@.type=="Ready")].status'),),
        ),
        CrdSpec(
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            "kustomizations",
            ("v1",),
            ("ks",),
            (("Ready", '.status.conditions[?(@.type=="Ready")].status'),),
        ),
        CrdSpec(
            "replication.storage.openshift.io",
            "VolumeReplication",
            "volumereplications",
            ("v1alpha1",),
            ("vr",),
            (("State", ".status.state"), ("DesiredState", ".spec.replicationState")),
        ),
        CrdSpec(
            "crd.hahomelabs.com",
            "Failover",
            "failovers",
            ("v1alpha1",),
            ("fo",),
            (
                ("Status", ".status.status"),
                ("State", ".status.state"),
                ("Target", ".spec.targetCluster"),
                ("Mode", ".spec.failoverMode"),
            ),
        ),
        CrdSpec(
            "crd.hahomelabs.com",
            "FailoverGroup",
            "failovergroups",
            ("v1alpha1",),
            ("fg",),
            (
                ("Health", ".status.health"),
                ("Suspended", ".spec.suspended"),
                ("Active", ".status.globalState.activeCluster"),
            ),
        ),
    ]
    return [spec.manifest() for spec in specs]
