"""The Kubernetes manifests in deploy/: valid against the Kubernetes schemas (offline), least-privilege
RBAC, hardened pods whose commands exist, settings that load, and a kustomization that covers them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fsm.crds import custom_resource_definitions
from tests.deploy.helpers import (
    DEPLOY,
    by_kind,
    load_documents,
    load_settings,
    manifest_files,
    manifests,
    named,
    resolve_container_command,
    settings_configmap,
    validate_against_crd,
)

# The oldest Kubernetes minor the manifests must work on (CEL rules on CRDs are GA since 1.29).
KUBERNETES_VERSION = "1.30"
NOT_IN_KUBERNETES_SCHEMAS = {"ScaledObject"}  # KEDA's CRD: checked by test_keda_scales_on_the_queue_list
COMPONENTS = ("worker", "watcher", "health-checker", "flower", "beat")


def _ids() -> list[str]:
    return [
        f"{path.relative_to(DEPLOY)}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in manifests()
    ]


@pytest.mark.parametrize("doc", [doc for _, doc in manifests()], ids=_ids())
def test_every_manifest_validates_offline_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    if doc["kind"] in NOT_IN_KUBERNETES_SCHEMAS:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        return
    ours = {crd["spec"]["names"]["kind"]: crd for crd in custom_resource_definitions()}
    if doc["kind"] in ours:
        assert doc["apiVersion"] == "crd.hahomelabs.com/v1alpha1"
        validate_against_crd(ours[doc["kind"]], doc)
        return
    # strict: unknown fields are errors, as the API server's strict field validation makes them.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_really_rejects_a_broken_manifest() -> None:
    deployment = yaml.safe_load(yaml.safe_dump(named("Deployment", "failover-worker")))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = yaml.safe_load(yaml.safe_dump(named("Deployment", "failover-worker")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- kustomize -----------------------------------------------------------------------------------


def _kustomize_references(directory: Path) -> set[Path]:
    """Every file a kustomization (and the kustomizations it includes) pulls in."""
    (kustomization,) = load_documents(directory / "kustomization.yaml")
    files: set[Path] = set()
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        target = (directory / entry).resolve()
        if target.is_dir():
            files |= _kustomize_references(target)
        else:
            assert target.exists(), f"{directory}/kustomization.yaml names a missing {entry}"
            files.add(target)
    return files


def test_the_kustomizations_cover_every_manifest_but_the_examples() -> None:
    referenced = (
        _kustomize_references(DEPLOY)
        | _kustomize_references(DEPLOY / "remote-access")
        | _kustomize_references(DEPLOY / "autoscaling" / "hpa")
    )
    unreferenced = {p.resolve() for p in manifest_files()} - referenced
    assert {p.relative_to(DEPLOY).parts[0] for p in unreferenced} <= {"examples"}


@pytest.mark.parametrize("directory", ["", "remote-access"])
def test_kustomize_builds(directory: str, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc]
    assert kinds.count("CustomResourceDefinition") == 2
    if directory == "":
        assert kinds.count("Deployment") == len(COMPONENTS)
        assert "ScaledObject" in kinds


# --- RBAC ----------------------------------------------------------------------------------------

# What each component may do; tests/sandbox/test_rbac_usage.py checks it against what each one used.
WORKLOAD_KINDS = (
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("batch", "cronjobs"),
    ("networking.k8s.io", "ingresses"),
    ("networking.istio.io", "virtualservices"),
    ("helm.toolkit.fluxcd.io", "helmreleases"),
    ("kustomize.toolkit.fluxcd.io", "kustomizations"),
    ("replication.storage.openshift.io", "volumereplications"),
)
RULES = {
    "failover-orchestrator-worker": {
        # list: a step's objects of one kind in one namespace, read in one request (workers/kube_many.py)
        **{key: {"get", "list", "patch"} for key in WORKLOAD_KINDS},
        ("batch", "jobs"): {"list", "delete"},  # a suspended CronJob's Jobs past the step deadline
        ("crd.hahomelabs.com", "failovergroups"): {"get", "patch"},  # the fence annotation (deploy/fencing)
        # whether deploy/fencing is enforced (workers/kube_many.py: fence_enforced)
        ("admissionregistration.k8s.io", "validatingadmissionpolicies"): {"list"},
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"): {"list"},
    },
    "failover-orchestrator-watcher": {
        ("crd.hahomelabs.com", "failovers"): {"get", "list", "watch"},
        ("crd.hahomelabs.com", "failovergroups"): {"get", "list"},
        ("crd.hahomelabs.com", "failovers/status"): {"patch"},
        ("crd.hahomelabs.com", "failovergroups/status"): {"patch"},
        ("", "events"): {"create"},
        # get: the FailoverGroup's health in its status; list, watch: the waker (producers.waker)
        **{key: {"get", "list", "watch"} for key in WORKLOAD_KINDS},
    },
    "failover-orchestrator-health-checker": {
        ("crd.hahomelabs.com", "failovergroups"): {"list"},
        ("crd.hahomelabs.com", "failovers"): {"list", "create"},
        **{key: {"get"} for key in WORKLOAD_KINDS},
    },
    "failover-orchestrator-operator": {
        ("crd.hahomelabs.com", "failovers"): {"get", "list", "watch", "create"},
        ("crd.hahomelabs.com", "failovergroups"): {"get", "list", "watch"},
        **{key: {"get"} for key in WORKLOAD_KINDS},  # failoverctl validate / plan
    },
}


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_no_rbac_rule_uses_a_wildcard_or_a_dangerous_verb() -> None:
    roles = by_kind("ClusterRole") + by_kind("Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: wildcard in {key}"
            assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "deletecollection"}
            assert not {
                r for r in rule["resources"] if r in ("secrets", "pods/exec", "serviceaccounts/token")
            }


def test_each_component_gets_exactly_its_documented_permissions() -> None:
    roles = {role["metadata"]["name"]: role for role in by_kind("ClusterRole")}
    assert set(roles) == set(RULES)
    for name, expected in RULES.items():
        assert _grants(roles[name]) == expected, name


def test_each_role_is_bound_to_its_own_service_account_and_flower_and_beat_get_nothing() -> None:
    bindings = {
        (b["roleRef"]["name"], s["kind"], s["name"], s.get("namespace", ""))
        for b in by_kind("ClusterRoleBinding") + by_kind("RoleBinding")
        for s in b["subjects"]
    }
    assert bindings == {
        ("failover-orchestrator-worker", "ServiceAccount", "failover-worker", "failover-orchestrator"),
        ("failover-orchestrator-watcher", "ServiceAccount", "failover-watcher", "failover-orchestrator"),
        (
            "failover-orchestrator-health-checker",
            "ServiceAccount",
            "failover-health-checker",
            "failover-orchestrator",
        ),
        ("failover-orchestrator-operator", "Group", "failover-orchestrator-operators", ""),
    }
    for name in ("failover-flower", "failover-beat"):
        assert named("ServiceAccount", name)["automountServiceAccountToken"] is False


# --- pods ----------------------------------------------------------------------------------------


def _pod(component: str) -> dict[str, Any]:
    spec: dict[str, Any] = named("Deployment", f"failover-{component}")["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("component", COMPONENTS)
def test_pods_run_hardened(component: str) -> None:
    pod = _pod(component)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == f"failover-{component}"
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"


@pytest.mark.parametrize("component", COMPONENTS)
def test_container_commands_exist_in_the_image(component: str) -> None:
    (container,) = _pod(component)["containers"]
    problem = resolve_container_command(container.get("command", []), container.get("args", []))
    assert problem is None, problem


@pytest.mark.parametrize("component", ["worker", "watcher", "health-checker", "flower"])
def test_probes_are_set_and_their_commands_exist(component: str, tmp_path: Path) -> None:
    (container,) = _pod(component)["containers"]
    assert "livenessProbe" in container
    assert "readinessProbe" in container or "startupProbe" in container
    from workers import liveness

    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container.get(probe, {}).get("exec", {}).get("command")
        if command is None:
            continue
        assert resolve_container_command(["python"], command[1:]) is None
        # The probe's own arguments parse (a missing file is "not alive", exit 1, not a usage error).
        assert command[:4] == ["python", "-m", "workers.liveness", "check"]
        assert liveness.main([*command[3:], "--file", str(tmp_path / "absent")]) == 1


@pytest.mark.parametrize("component", ["worker", "watcher", "health-checker"])
def test_the_kubeconfig_secret_is_mounted_where_the_settings_point_per_component(component: str) -> None:
    pod = _pod(component)
    (container,) = pod["containers"]
    kubeconfig = Path(settings_configmap()["FAILOVER_KUBECONFIG"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kubeconfig"]
    assert mount["readOnly"] is True and Path(mount["mountPath"]) == kubeconfig.parent
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kubeconfig"]
    assert volume["secret"]["secretName"] == "failover-orchestrator-kubeconfig"
    # Each component sees only its own kubeconfig (its own, least-privilege identity per cluster).
    assert volume["secret"]["items"] == [{"key": component, "path": kubeconfig.name}]
    (example,) = load_documents(DEPLOY / "examples" / "kubeconfig-secret.yaml")
    assert component in example["stringData"]


def test_only_the_worker_uses_the_multiprocess_metrics_directory() -> None:
    for component in COMPONENTS:
        (container,) = _pod(component)["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if component == "worker":
            directory = env["PROMETHEUS_MULTIPROC_DIR"]
            assert directory in {m["mountPath"] for m in container["volumeMounts"]}
        else:
            assert "PROMETHEUS_MULTIPROC_DIR" not in env
    assert "PROMETHEUS_MULTIPROC_DIR" not in settings_configmap()


def test_every_component_reads_the_same_settings_and_they_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for component in COMPONENTS:
        (container,) = _pod(component)["containers"]
        sources = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        assert sources == ["failover-orchestrator-settings"]
        # The Redis URL carries a password: from a required Secret, never from the ConfigMap.
        assert {"secretRef": {"name": "failover-orchestrator-redis"}} in container["envFrom"]
    assert "FAILOVER_REDIS_URL" not in settings_configmap()
    settings = load_settings({**settings_configmap(), **redis_secret()}, monkeypatch)
    assert settings.queue == "failover"
    assert settings.clusters == ["site-a", "site-b"]
    assert settings.log_json is True
    assert settings.redis_url.startswith("rediss://failover:")


def test_the_configmap_owns_the_sample_group() -> None:
    (group,) = [
        d
        for d in load_documents(DEPLOY.parent / "sandbox" / "samples" / "shop.yaml")
        if d["kind"] == "FailoverGroup"
    ]
    assert settings_configmap()["FAILOVER_OPERATOR_ID"] == group["spec"]["operatorID"]


def test_metrics_ports_agree() -> None:
    port = int(settings_configmap()["FAILOVER_METRICS_PORT"])
    service = named("Service", "failover-orchestrator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
    ]
    selector = service["spec"]["selector"]
    for component in ("worker", "watcher", "health-checker"):
        deployment = named("Deployment", f"failover-{component}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]


# --- autoscaling, disruption, network ------------------------------------------------------------


def redis_secret() -> dict[str, str]:
    """The example Secret failover-orchestrator-redis (deploy/examples/redis-secret.yaml)."""
    (secret,) = load_documents(DEPLOY / "examples" / "redis-secret.yaml")
    data: dict[str, str] = secret["stringData"]
    return data


def test_keda_scales_on_the_queue_list() -> None:
    (scaled,) = by_kind("ScaledObject")
    config = settings_configmap()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "failover-worker"
    assert scaled["spec"]["minReplicaCount"] >= 1, "countdown messages live in the workers: never zero"
    assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    queue = config.get("FAILOVER_BROKER_PREFIX", "") + config["FAILOVER_QUEUE"]
    assert metadata["listName"] == queue
    assert int(metadata["listLength"]) > 0
    # KEDA resolves addressFromEnv from the scale target's container environment.
    assert metadata["addressFromEnv"] in config
    assert metadata["passwordFromEnv"] in redis_secret()  # the worker's env, from the Secret
    assert metadata["enableTLS"] == "true"
    redis_url = redis_secret()["FAILOVER_REDIS_URL"]
    address = redis_url.split("@", 1)[1]
    assert address.startswith(f"{config[metadata['addressFromEnv']]}/{metadata['databaseIndex']}?")
    assert "replicas" not in named("Deployment", "failover-worker")["spec"], "would fight the autoscaler"


def test_the_hpa_alternative_targets_the_queue_depth_metric() -> None:
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "failover_queue_depth"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {
        "queue": settings_configmap()["FAILOVER_QUEUE"]
    }
    assert hpa["spec"]["minReplicas"] >= 1


def test_the_pdb_covers_the_workers() -> None:
    (pdb,) = by_kind("PodDisruptionBudget")
    labels = named("Deployment", "failover-worker")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_network_policies_deny_by_default_and_open_only_what_is_needed() -> None:
    policies = {p["metadata"]["name"]: p for p in by_kind("NetworkPolicy")}
    deny = policies["failover-orchestrator-default-deny"]["spec"]
    assert (
        set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    )
    ingress_ports = sorted(
        port["port"]
        for p in policies.values()
        for rule in p["spec"].get("ingress", [])
        for port in rule["ports"]
    )
    assert ingress_ports == [5555, 9808]
    flower = _pod("flower")
    flower_labels = named("Deployment", "failover-flower")["spec"]["template"]["metadata"]["labels"]
    egress_api = policies["failover-orchestrator-egress-apis"]["spec"]["podSelector"]["matchExpressions"]
    components = next(e["values"] for e in egress_api if e["key"] == "app.kubernetes.io/component")
    assert flower_labels["app.kubernetes.io/component"] not in components
    assert flower["automountServiceAccountToken"] is False


def test_every_egress_rule_names_its_destination() -> None:
    """No "any host on this port": each egress rule has a `to` (a selector or a CIDR, never 0.0.0.0/0)."""
    policies = {p["metadata"]["name"]: p for p in by_kind("NetworkPolicy")}
    destinations: dict[str, list[dict[str, Any]]] = {}
    for name, policy in policies.items():
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{name}: an egress rule without a destination"
            for peer in rule["to"]:
                cidr = (peer.get("ipBlock") or {}).get("cidr", "")
                assert cidr not in ("0.0.0.0/0", "::/0"), name
                assert peer.get("ipBlock") or peer.get("podSelector") or peer.get("namespaceSelector")
            destinations.setdefault(name, []).append(rule)
    redis_ports = {
        p["port"] for r in destinations["failover-orchestrator-egress-dns-redis"] for p in r["ports"]
    }
    assert redis_ports == {53, 6379, 6380}
    assert {p["port"] for r in destinations["failover-orchestrator-egress-apis"] for p in r["ports"]} == {
        443,
        6443,
    }
    assert {p["port"] for r in destinations["failover-orchestrator-egress-dynamodb"] for p in r["ports"]} == {
        443
    }
    # The placeholders are documentation ranges (RFC 5737): they fail closed until filled in.
    import ipaddress

    documentation = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    for name in ("failover-orchestrator-egress-apis", "failover-orchestrator-egress-dynamodb"):
        for rule in destinations[name]:
            for peer in rule["to"]:
                network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert any(network.subnet_of(d) for d in documentation), (name, network)
