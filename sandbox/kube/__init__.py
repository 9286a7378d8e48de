"""A faithful fake Kubernetes API server for tests and the demo: one HTTP server per simulated cluster.

Usage::

    from sandbox.kube import SandboxFleet, load_sample_fleet

    with SandboxFleet(["site-a", "site-b"], kubeconfig_path=tmp_path / "kubeconfig") as fleet:
        load_sample_fleet(fleet, active="site-a")
        fleet["site-a"].url, fleet.kubeconfig_path        # kubectl / kubernetes client targets
        fleet["site-a"].store.get("Deployment", "shop", "web")
        fleet["site-a"].faults.latency = 0.05
        fleet["site-b"].controllers.workload_delay = 0.2
        fleet["site-a"].set_down(True)

Identities: the kubeconfig a cluster writes acts as the orchestrator's worker ServiceAccount;
``cluster.api_client("admin")``, ``cluster.kubeconfig("admin")``, ``write_kubeconfig(..., user="admin")``
act as a cluster admin, and ``cluster.add_user(name, groups)`` returns the token of a new user.

A whole site: ``load_sample_copies(cluster, 1000, active=True)`` loads 1,000 copies of the sample group;
``SandboxFleet(names, processes=True)`` runs each cluster in its own process (``python -m sandbox.kube
--name site-a --port 0`` runs one by hand), so the API servers do not share the caller's cores.

Modules: ``cluster`` (one cluster), ``process`` (one cluster in a child process), ``fleet`` (several
+ kubeconfig), ``store`` (objects, indexes, versions, history), ``api`` (REST verbs), ``server``
(HTTP), ``identity`` (tokens -> users), ``admission`` (ValidatingAdmissionPolicy), ``crd_rules`` (CRD
``x-kubernetes-validations``), ``expressions`` (CEL, each value converted once per request),
``cel_paths`` (the fields an expression selects, so only those are converted), ``manifests``
(deploy/ files every cluster installs), ``watch``, ``discovery``, ``patch``, ``selectors``,
``validation``, ``kinds``, ``controllers`` (event-driven), ``faults``, ``samples``. This package stands
in for the outside world: it must never be imported by the product (``fsm``, ``workers``, ``producers``).
"""

from sandbox.kube.cluster import SandboxCluster
from sandbox.kube.controllers import Controllers
from sandbox.kube.errors import ApiError
from sandbox.kube.faults import FaultKnobs
from sandbox.kube.fleet import SandboxFleet, write_kubeconfig
from sandbox.kube.identity import UserInfo
from sandbox.kube.samples import load_sample_copies, load_sample_fleet, load_sample_group, sample_manifests
from sandbox.kube.store import ObjectStore

__all__ = [
    "ApiError",
    "Controllers",
    "FaultKnobs",
    "ObjectStore",
    "SandboxCluster",
    "SandboxFleet",
    "UserInfo",
    "load_sample_copies",
    "load_sample_fleet",
    "load_sample_group",
    "sample_manifests",
    "write_kubeconfig",
]
