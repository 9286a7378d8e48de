"""Identities and ValidatingAdmissionPolicy admission of the sandbox API server, through the official
kubernetes client: who a token is, which writes a policy matches, params, variables, messages,
failurePolicy, the Warn action, and the Status a denial answers with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sandbox.kube import SandboxCluster, SandboxFleet, expressions, write_kubeconfig
from tests.sandbox.helpers import deployment, raw_request, statefulset, status_body

pytestmark = pytest.mark.integration

WORKER = "system:serviceaccount:failover-orchestrator:failover-worker"
GROUP, VERSION = "crd.hahomelabs.com", "v1alpha1"


@pytest.fixture
def admin(still: SandboxCluster) -> Iterator[ApiClient]:
    api = still.api_client("admin")
    yield api
    api.close()


def install(
    admin: ApiClient,
    name: str,
    validations: list[dict[str, Any]],
    *,
    actions: tuple[str, ...] = ("Deny",),
    binding: dict[str, Any] | None = None,
    **spec: Any,
) -> None:
    """Create a policy ``name`` (deployments, every write, unless ``matchConstraints`` is given)
    and its binding ``name-binding``, as an admin would with kubectl."""
    spec.setdefault(
        "matchConstraints",
        {
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE", "DELETE"],
                    "resources": ["deployments"],
                }
            ]
        },
    )
    registration = client.AdmissionregistrationV1Api(admin)
    registration.create_validating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {"validations": validations, **spec},
        }
    )
    registration.create_validating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": f"{name}-binding"},
            "spec": {"policyName": name, "validationActions": list(actions), **(binding or {})},
        }
    )


def refused(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as exc:
        call(*args, **kwargs)
    return exc.value.status, status_body(exc.value)


def denial(body: dict[str, Any]) -> str:
    """The policy's own message in a denial (after ``denied request: ``)."""
    return body["details"]["causes"][0]["message"].split("denied request: ", 1)[1]


def replicas_at_most(limit: int) -> list[dict[str, Any]]:
    return [{"expression": f"object.spec.replicas <= {limit}", "message": f"at most {limit} replicas"}]


# --- identities ------------------------------------------------------------------------------------


def test_each_token_is_a_user_and_an_unknown_token_is_401(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    install(
        admin,
        "who",
        [
            {
                "expression": "false",
                "messageExpression": "request.userInfo.username + ' ' + "
                "string(request.userInfo.groups.exists(g, g == 'system:masters'))",
            }
        ],
    )
    apps = client.AppsV1Api(api)
    _, body = refused(apps.create_namespaced_deployment, "default", deployment("web"))
    assert denial(body) == f"{WORKER} false"
    _, body = refused(client.AppsV1Api(admin).create_namespaced_deployment, "default", deployment("web"))
    assert denial(body) == "kubernetes-admin true"

    token = still.add_user("jane@example.com", ["ops", "system:authenticated"], alias="jane")
    assert still.user(token) is not None and still.user(token).groups == ("ops", "system:authenticated")
    jane = still.api_client("jane")
    try:
        _, body = refused(client.AppsV1Api(jane).create_namespaced_deployment, "default", deployment("web"))
        assert denial(body) == "jane@example.com false"
    finally:
        jane.close()

    code, _, raw = raw_request(
        still.url, "GET", "/api/v1/namespaces", headers={"Authorization": "Bearer nope"}
    )
    assert code == 401 and json.loads(raw)["reason"] == "Unauthorized"
    assert still.kubeconfig()["user"]["user"]["token"] == still.token  # the product's kubeconfig
    assert still.kubeconfig("admin")["context"]["name"] == "site-a-admin"


def test_a_kubeconfig_can_act_as_the_admin(fleet: SandboxFleet, tmp_path: Path) -> None:
    path = write_kubeconfig(list(fleet), tmp_path / "admin-kubeconfig", user="admin")
    for name in fleet.names:
        api = config.new_client_from_config(config_file=str(path), context=name)
        try:
            client.AppsV1Api(api).create_namespaced_deployment("default", deployment("web"))
        finally:
            api.close()
    assert fleet["site-a"].kubeconfig("admin", context="x")["user"]["user"]["token"] != fleet["site-a"].token


# --- the denial ---------------------------------------------------------------------------------------


def test_a_denial_is_a_422_invalid_status_shaped_like_the_api_server(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    install(admin, "max-replicas", replicas_at_most(3))
    apps = client.AppsV1Api(api)
    code, body = refused(apps.create_namespaced_deployment, "default", deployment("web", 5))
    cause = (
        "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding' denied request: "
        "at most 3 replicas"
    )
    assert (code, body["reason"], body["status"]) == (422, "Invalid", "Failure")
    assert body["message"] == f'deployments.apps "web" is forbidden: {cause}'
    assert body["details"] == {
        "name": "web",
        "group": "apps",
        "kind": "deployments",
        "causes": [{"message": cause}],
    }
    assert still.store.find("Deployment", "default", "web") is None

    apps.create_namespaced_deployment("default", deployment("web", 3))
    code, _ = refused(apps.patch_namespaced_deployment, "web", "default", {"spec": {"replicas": 4}})
    assert code == 422
    # /scale is a subresource: "deployments" does not match it (deployments/scale would)
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 9}})
    assert still.store.get("Deployment", "default", "web")["spec"]["replicas"] == 9


@pytest.mark.parametrize(
    ("reason", "code"),
    [("Forbidden", 403), ("Unauthorized", 401), ("RequestEntityTooLarge", 413), ("Invalid", 422)],
)
def test_the_reason_of_a_validation_picks_the_code(
    api: ApiClient, admin: ApiClient, reason: str, code: int
) -> None:
    install(admin, "reasoned", [{"expression": "false", "message": "no", "reason": reason}])
    got, body = refused(client.AppsV1Api(api).create_namespaced_deployment, "default", deployment("web"))
    assert (got, body["reason"], body["code"]) == (code, reason, code)


def test_message_falls_back_to_the_expression_and_message_expression_wins(
    api: ApiClient, admin: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    install(admin, "bare", [{"expression": "object.spec.replicas < 2"}])
    _, body = refused(apps.create_namespaced_deployment, "default", deployment("a", 2))
    assert denial(body) == "failed expression: object.spec.replicas < 2"
    client.AdmissionregistrationV1Api(admin).delete_validating_admission_policy_binding("bare-binding")

    install(
        admin,
        "computed",
        [
            {
                "expression": "object.spec.replicas < 2",
                "message": "static",
                "messageExpression": "'asked for ' + string(object.spec.replicas)",
            },
            {
                "expression": "object.metadata.name != 'b'",
                "message": "static",
                "messageExpression": "1 / 0 == 1",
            },
        ],
    )
    _, body = refused(apps.create_namespaced_deployment, "default", deployment("a", 2))
    assert denial(body) == "asked for 2"
    _, body = refused(apps.create_namespaced_deployment, "default", deployment("b", 1))
    assert denial(body) == "static"  # a messageExpression that fails falls back to message


# --- matching -----------------------------------------------------------------------------------------


def test_resource_rules_operations_scope_subresources_and_exclusions(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web", 1))
    apps.create_namespaced_deployment("default", deployment("keep", 1))
    install(
        admin,
        "updates-only",
        replicas_at_most(2),
        matchConstraints={
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["*"],
                    "operations": ["UPDATE"],
                    "resources": ["deployments", "deployments/scale"],
                    "scope": "Namespaced",
                }
            ],
            "excludeResourceRules": [
                {
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    "operations": ["*"],
                    "resources": ["*"],
                    "resourceNames": ["keep"],
                }
            ],
        },
    )
    apps.create_namespaced_deployment("default", deployment("big", 5))  # CREATE is not matched
    code, _ = refused(apps.patch_namespaced_deployment, "web", "default", {"spec": {"replicas": 5}})
    assert code == 422
    # the Scale body is what /scale admits: object.spec.replicas is the Scale's
    code, body = refused(apps.patch_namespaced_deployment_scale, "web", "default", {"spec": {"replicas": 5}})
    assert code == 422 and denial(body) == "at most 2 replicas"
    apps.patch_namespaced_deployment("keep", "default", {"spec": {"replicas": 5}})  # excluded by name
    apps.patch_namespaced_deployment_status("web", "default", {"status": {"replicas": 9}})  # /status
    apps.delete_namespaced_deployment("big", "default")  # DELETE is not matched
    apps.create_namespaced_stateful_set("default", statefulset("db", 5))
    apps.patch_namespaced_stateful_set("db", "default", {"spec": {"replicas": 6}})  # another resource


def test_star_matches_resources_but_not_subresources(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web", 1))
    install(
        admin,
        "status-guard",
        [{"expression": "false", "message": "status writes refused"}],
        matchConstraints={
            "resourceRules": [
                {
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    "operations": ["UPDATE"],
                    "resources": ["*/status"],
                }
            ]
        },
    )
    apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 2}})
    _, body = refused(apps.patch_namespaced_deployment_status, "web", "default", {"status": {"replicas": 1}})
    assert denial(body) == "status writes refused"


def test_namespace_selector_and_a_bindings_match_resources_narrow_the_policy(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": "prod", "labels": {"tier": "prod"}}})
    core.create_namespace({"metadata": {"name": "dev", "labels": {"tier": "dev"}}})
    core.create_namespace({"metadata": {"name": "prod-eu", "labels": {"tier": "prod", "region": "eu"}}})
    spec = {
        "resourceRules": [
            {
                "apiGroups": ["apps"],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["deployments"],
            }
        ],
        "namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}]},
    }
    install(
        admin,
        "prod-small",
        replicas_at_most(2),
        matchConstraints=spec,
        binding={"matchResources": {"namespaceSelector": {"matchLabels": {"region": "eu"}}}},
    )
    apps.create_namespaced_deployment("dev", deployment("web", 5))
    apps.create_namespaced_deployment("prod", deployment("web", 5))  # the binding wants region=eu too
    code, _ = refused(apps.create_namespaced_deployment, "prod-eu", deployment("web", 5))
    assert code == 422


def test_object_selector_matches_the_old_or_the_new_object_on_update(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("labelled", 1, labels={"guarded": "yes"}))
    apps.create_namespaced_deployment("default", deployment("plain", 1))
    apps.create_namespaced_deployment("default", deployment("other", 1))
    install(
        admin,
        "guarded",
        [{"expression": "false", "message": "guarded"}],
        matchConstraints={
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["UPDATE"],
                    "resources": ["deployments"],
                }
            ],
            "objectSelector": {"matchLabels": {"guarded": "yes"}},
        },
    )
    remove = {"metadata": {"labels": {"guarded": None}}}
    code, _ = refused(apps.patch_namespaced_deployment, "labelled", "default", remove)  # old matched
    assert code == 422
    add = {"metadata": {"labels": {"guarded": "yes"}}}
    code, _ = refused(apps.patch_namespaced_deployment, "plain", "default", add)  # new matches
    assert code == 422
    apps.patch_namespaced_deployment("other", "default", {"spec": {"replicas": 2}})  # neither


def test_match_conditions_select_by_username_and_an_error_follows_the_failure_policy(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    install(
        admin,
        "workers-small",
        replicas_at_most(1),
        matchConditions=[
            {
                "name": "by-worker",
                "expression": "request.userInfo.username.startsWith('system:serviceaccount:')",
            }
        ],
    )
    code, _ = refused(client.AppsV1Api(api).create_namespaced_deployment, "default", deployment("a", 3))
    assert code == 422
    client.AppsV1Api(admin).create_namespaced_deployment("default", deployment("a", 3))

    for policy, failure in (("cond-fail", "Fail"), ("cond-ignore", "Ignore")):
        install(
            admin,
            policy,
            [{"expression": "true"}],
            failurePolicy=failure,
            matchConditions=[{"name": "bad", "expression": "int(object.metadata.name) > 0"}],
        )
    _, body = refused(client.AppsV1Api(admin).create_namespaced_deployment, "default", deployment("b", 1))
    assert body["message"].count("'cond-fail'") == 1 and "resulted in error" in body["message"]


# --- params -------------------------------------------------------------------------------------------


def _group(api: ApiClient, namespace: str, name: str, labels: dict[str, str], limit: int) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "failovergroups",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "FailoverGroup",
            "metadata": {"name": name, "labels": labels},
            "spec": {"limit": limit},
        },
    )


PARAMS = {"paramKind": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FailoverGroup"}}
LIMITED = [
    {
        "expression": "object.spec.replicas <= params.spec.limit",
        "messageExpression": "'over the limit of ' + params.metadata.name",
    }
]


def test_params_by_name_default_to_the_namespace_of_the_request(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": "shop"}})
    _group(admin, "shop", "limits", {}, 2)
    _group(admin, "default", "limits", {}, 10)
    install(admin, "by-name", LIMITED, binding={"paramRef": {"name": "limits"}}, **PARAMS)
    apps = client.AppsV1Api(api)
    _, body = refused(apps.create_namespaced_deployment, "shop", deployment("web", 3))
    assert denial(body) == "over the limit of limits"
    apps.create_namespaced_deployment("default", deployment("web", 3))


def test_params_by_selector_are_each_validated(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    _group(admin, "default", "loose", {"limits": "yes"}, 10)
    _group(admin, "default", "tight", {"limits": "yes"}, 2)
    _group(admin, "default", "ignored", {}, 0)
    install(
        admin,
        "by-selector",
        LIMITED,
        binding={
            "paramRef": {"selector": {"matchLabels": {"limits": "yes"}}, "parameterNotFoundAction": "Deny"}
        },
        **PARAMS,
    )
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("small", 2))  # passes both
    _, body = refused(apps.create_namespaced_deployment, "default", deployment("big", 3))
    assert denial(body) == "over the limit of tight"


@pytest.mark.parametrize(("action", "allowed"), [("Allow", True), ("Deny", False), (None, False)])
def test_parameter_not_found_action(
    api: ApiClient, admin: ApiClient, action: str | None, allowed: bool
) -> None:
    ref: dict[str, Any] = {"name": "missing"}
    if action:
        ref["parameterNotFoundAction"] = action
    install(admin, "no-params", LIMITED, binding={"paramRef": ref}, **PARAMS)
    apps = client.AppsV1Api(api)
    if allowed:
        apps.create_namespaced_deployment("default", deployment("web", 99))
        return
    code, body = refused(apps.create_namespaced_deployment, "default", deployment("web", 1))
    assert code == 422
    assert denial(body) == (
        "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
    )


# --- variables, errors, actions -------------------------------------------------------------------------


def test_variables_are_computed_in_order_and_seen_by_later_ones(api: ApiClient, admin: ApiClient) -> None:
    install(
        admin,
        "vars",
        [
            {
                "expression": "variables.total <= 4",
                "messageExpression": "'total ' + string(variables.total) + ' for ' + variables.name",
            }
        ],
        variables=[
            {"name": "name", "expression": "object.metadata.name"},
            {"name": "replicas", "expression": "object.spec.replicas"},
            {"name": "total", "expression": "variables.replicas * 2"},
            {"name": "broken", "expression": "int('not a number')"},  # never read: never fails
        ],
    )
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("ok", 2))
    _, body = refused(apps.create_namespaced_deployment, "default", deployment("web", 3))
    assert denial(body) == "total 6 for web"


@pytest.mark.parametrize("failure", ["Fail", "Ignore", None])
def test_an_evaluation_error_follows_the_failure_policy(
    still: SandboxCluster, api: ApiClient, admin: ApiClient, failure: str | None
) -> None:
    extra = {"failurePolicy": failure} if failure else {}
    install(
        admin,
        "bad-int",
        [{"expression": "int(object.metadata.annotations['epoch']) > 0"}],
        **extra,
    )
    body = deployment("web")
    body["metadata"]["annotations"] = {"epoch": "seven"}
    apps = client.AppsV1Api(api)
    if failure == "Ignore":
        apps.create_namespaced_deployment("default", body)
        missing_key = deployment("other")  # no annotations at all: a missing key, also ignored
        apps.create_namespaced_deployment("default", missing_key)
        return
    code, status = refused(apps.create_namespaced_deployment, "default", body)
    assert code == 422
    assert denial(status).startswith(
        "expression 'int(object.metadata.annotations['epoch']) > 0' resulted in error"
    )


def test_warn_sends_a_warning_header_and_allows_and_audit_does_nothing(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    install(admin, "warned", replicas_at_most(1), actions=("Warn",))
    install(admin, "audited", replicas_at_most(1), actions=("Audit",))
    apps = client.AppsV1Api(api)
    _, code, headers = apps.create_namespaced_deployment_with_http_info("default", deployment("web", 3))
    assert code == 201
    assert headers["Warning"] == (
        "299 - \"Validation failed for ValidatingAdmissionPolicy 'warned' with binding 'warned-binding': "
        'at most 1 replicas"'
    )
    _, _, quiet = apps.create_namespaced_deployment_with_http_info("default", deployment("small", 1))
    assert "Warning" not in quiet


def test_dry_runs_and_deletes_are_admitted_too(
    still: SandboxCluster, api: ApiClient, admin: ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("web", 1, labels={"protected": "true"}))
    install(
        admin,
        "no-delete",
        [
            {
                "expression": "object == null && oldObject.metadata.labels.protected != 'true'",
                "messageExpression": "'protected ' + oldObject.metadata.name + ' dry='"
                " + string(request.dryRun)",
            }
        ],
        matchConstraints={
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["DELETE"],
                    "resources": ["deployments"],
                }
            ]
        },
    )
    _, body = refused(apps.delete_namespaced_deployment, "web", "default", dry_run="All")
    assert denial(body) == "protected web dry=true"
    _, body = refused(apps.delete_collection_namespaced_deployment, "default")
    assert denial(body) == "protected web dry=false"
    assert still.store.find("Deployment", "default", "web") is not None
    still.store.delete("Deployment", "default", "web")  # direct store writes are not admitted


def test_expressions_are_compiled_once_and_a_policy_that_does_not_compile_is_refused(
    api: ApiClient, admin: ApiClient
) -> None:
    install(admin, "cached", [{"expression": "object.spec.replicas <= 1000 && true || false"}])
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", deployment("a"))
    size = expressions.cache_size()
    apps.create_namespaced_deployment("default", deployment("b"))
    apps.patch_namespaced_deployment("b", "default", {"spec": {"replicas": 2}})
    assert expressions.cache_size() == size

    code, body = refused(
        client.AdmissionregistrationV1Api(admin).create_validating_admission_policy,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "broken"},
            "spec": {"validations": [{"expression": "object.spec.replicas <"}]},
        },
    )
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.validations[0].expression"


def test_policies_are_served_to_kubectl(still: SandboxCluster, kubectl: Any) -> None:
    out = kubectl("get", "validatingadmissionpolicies", "-o", "name", context="site-a")
    assert out.returncode == 0, out.stderr
    assert (
        "validatingadmissionpolicy.admissionregistration.k8s.io/failover-fence.hahomelabs.com" in out.stdout
    )
