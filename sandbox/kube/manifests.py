"""The repository's own deploy/ manifests that every sandbox cluster installs, read from the checkout.

The fence policies (deploy/fencing) and the ServiceAccounts and roles (deploy/rbac) are part of what
a managed cluster runs, so a sandbox cluster installs the very files that ship, not a copy that could
drift. They are found relative to this
package (the repository root is two levels above ``sandbox/``), which holds for a checkout on the
PYTHONPATH and for an editable install; a non-editable install has no deploy/ folder and must pass
``install_fencing=False, install_rbac=False``. This module only reads files; it must not touch a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def deploy_dir() -> Path:
    """The repository's deploy/ folder; FileNotFoundError if this package is not in a checkout."""
    if not (DEPLOY / "fencing").is_dir():
        raise FileNotFoundError(
            f"no deploy/fencing next to the sandbox package (looked in {DEPLOY}): run from a checkout "
            "or an editable install, or create the cluster with install_fencing=False"
        )
    return DEPLOY


def kustomization_documents(folder: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization folder's ``resources`` files, in their order (no patches)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text()) or {}
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources") or []:
        path = folder / resource
        if path.is_dir():
            documents += kustomization_documents(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def fencing_manifests() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicies and bindings of deploy/fencing."""
    return kustomization_documents(deploy_dir() / "fencing")


def rbac_manifests(folder: str = "rbac") -> list[dict[str, Any]]:
    """The ServiceAccounts, (Cluster)Roles and bindings of deploy/rbac (or another deploy/ folder)."""
    return kustomization_documents(deploy_dir() / folder)


def project_crds() -> list[dict[str, Any]]:
    """The Failover and FailoverGroup CRDs of deploy/crds as shipped (schema, defaults, CEL rules,
    printer columns); none outside a checkout (the sandbox then serves its compact open-schema ones)."""
    folder = DEPLOY / "crds"
    return kustomization_documents(folder) if (folder / "kustomization.yaml").is_file() else []
