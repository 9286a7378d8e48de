"""The CRDs: generated from the models, checked in without drift, structural, and accepting the samples."""

from __future__ import annotations

import copy
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from fsm.crds import (
    DURATION_PATTERN,
    DURATION_RULE,
    UnsupportedSchema,
    custom_resource_definitions,
    failover_crd,
    failover_group_crd,
    structural_schema,
)
from fsm.models import Failover, FailoverGroup, parse_duration
from tests.deploy.helpers import DEPLOY, ROOT, load_documents, validate_against_crd

SAMPLES = ROOT / "sandbox" / "samples" / "shop.yaml"
FAILOVER_EXAMPLE = DEPLOY / "examples" / "failover.yaml"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_crds", DEPLOY / "generate_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _openapi(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _validate(crd: dict[str, Any], obj: dict[str, Any]) -> None:
    validate_against_crd(crd, obj)


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


# --- drift ---------------------------------------------------------------------------------------


def test_checked_in_crd_yaml_is_exactly_what_the_models_generate() -> None:
    generator = _generator()
    expected = generator.rendered()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (DEPLOY / "crds").glob("*_*.yaml")}
    assert set(on_disk) == set(expected), "deploy/crds holds other files than the generator writes"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale: run .venv/bin/python deploy/generate_crds.py"
    assert generator.main(["--check"]) == 0


def test_the_check_mode_reports_a_drifted_file(tmp_path: Path) -> None:
    generator = _generator()
    assert generator.main(["--out", str(tmp_path)]) == 0
    first = sorted(tmp_path.iterdir())[0]
    first.write_text(first.read_text(encoding="utf-8").replace("minLength: 1", "minLength: 2"), "utf-8")
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1


def test_the_crd_kustomization_lists_every_generated_file() -> None:
    (kustomization,) = load_documents(DEPLOY / "crds" / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(_generator().rendered())


# --- shape ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("crd", custom_resource_definitions(), ids=lambda c: c["spec"]["names"]["kind"])
def test_each_crd_is_namespaced_v1alpha1_with_status_subresource(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert spec["group"] == "crd.hahomelabs.com"
    assert spec["scope"] == "Namespaced"
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.crd.hahomelabs.com"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    status = _openapi(crd)["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize("crd", custom_resource_definitions(), ids=lambda c: c["spec"]["names"]["kind"])
def test_each_schema_is_structural(crd: dict[str, Any]) -> None:
    for path, node in _nodes(_openapi(crd)):
        assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        assert "format" not in node and "title" not in node and "const" not in node, path
        if "default" in node:
            assert node["default"] is not None, path


def test_printer_columns_and_short_names() -> None:
    def columns(crd: dict[str, Any]) -> list[tuple[str, str]]:
        return [(c["name"], c["jsonPath"]) for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]

    assert columns(failover_crd()) == [
        ("Status", ".status.status"),
        ("State", ".status.state"),
        ("Target", ".spec.targetCluster"),
        ("Mode", ".spec.failoverMode"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert columns(failover_group_crd()) == [
        ("Health", ".status.health"),
        ("Suspended", ".spec.suspended"),  # the API server defaults it to false: never empty
        ("Active", ".status.globalState.activeCluster"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert failover_crd()["spec"]["names"]["shortNames"] == ["fo"]
    assert failover_group_crd()["spec"]["names"]["shortNames"] == ["fg"]


def test_the_failover_spec_is_immutable_by_cel_and_bounded_for_its_cost() -> None:
    spec = _openapi(failover_crd())["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": "spec is immutable: create a new Failover"}
    ]
    # The API server estimates the rule's cost from the largest possible spec: every string and list
    # under it needs a bound, or the CRD is rejected.
    for path, node in _nodes(spec):
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, f"spec{path} has no maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"spec{path} has no maxItems"
    assert "x-kubernetes-validations" not in _openapi(failover_group_crd())["properties"]["spec"]


def test_enums_durations_and_nullables_come_from_the_models() -> None:
    fo = _openapi(failover_crd())["properties"]["spec"]["properties"]
    assert fo["failoverMode"]["enum"] == ["CONSISTENCY", "UPTIME"]
    assert fo["failoverGroups"]["minItems"] == 1
    namespace = fo["failoverGroups"]["items"]["properties"]["namespace"]
    assert namespace["type"] == "string" and namespace["nullable"] is True and "default" not in namespace
    fg = _openapi(failover_group_crd())["properties"]["spec"]["properties"]
    assert fg["workloads"]["items"]["properties"]["kind"]["enum"] == ["Deployment", "StatefulSet", "CronJob"]
    assert fg["heartbeatInterval"] == {
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": 64,
        "x-kubernetes-validations": [DURATION_RULE],
        "default": "30s",
        "description": "How often each cluster writes its heartbeat.",
    }
    assert fg["timeouts"]["properties"]["transitoryState"]["default"] == "5m"
    assert _openapi(failover_group_crd())["properties"]["spec"]["required"] == ["operatorID"]


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("30s", True),
        ("5m", True),
        ("1h30m", True),
        ("1.5h", True),
        ("250ms", True),
        ("5", False),
        ("5 m", False),
        ("PT5M", False),
        ("m5", False),
        ("", False),
        ("-5m", False),
    ],
)
def test_the_duration_pattern_agrees_with_the_model_parser(text: str, valid: bool) -> None:
    assert bool(re.fullmatch(DURATION_PATTERN.strip("^$"), text)) is valid
    if valid:
        assert parse_duration(text).total_seconds() > 0
    else:
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)


def test_a_construct_kubernetes_cannot_express_fails_the_generator() -> None:
    class Either(BaseModel):
        value: int | str

    with pytest.raises(UnsupportedSchema, match=r"Either\.value: only 'X or null' unions"):
        structural_schema(Either)


# --- samples against the generated schemas ------------------------------------------------------


def _sample(kind: str) -> dict[str, Any]:
    (found,) = [d for d in load_documents(SAMPLES) if d["kind"] == kind]
    return found


def test_the_sample_failover_group_validates_against_the_crd_and_the_model() -> None:
    group = _sample("FailoverGroup")
    _validate(failover_group_crd(), group)
    FailoverGroup.model_validate(group)


def test_the_example_failover_validates_against_the_crd_and_the_model() -> None:
    (failover,) = load_documents(FAILOVER_EXAMPLE)
    _validate(failover_crd(), failover)
    Failover.model_validate(failover)
    with_namespace = copy.deepcopy(failover)
    with_namespace["spec"]["failoverGroups"] = [{"name": "shop", "namespace": None}]
    _validate(failover_crd(), with_namespace)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(failoverMode="FAST"), "'FAST' is not one of"),
        (lambda s: s.pop("targetCluster"), "'targetCluster' is a required property"),
        (lambda s: s.update(failoverGroups=[]), "should be non-empty"),
        (lambda s: s.update(reason="x" * 5000), "is too long"),
    ],
    ids=["unknown-mode", "no-target", "no-groups", "reason-too-long"],
)
def test_the_failover_schema_rejects_bad_requests(change: Any, message: str) -> None:
    (failover,) = load_documents(FAILOVER_EXAMPLE)
    change(failover["spec"])
    with pytest.raises(jsonschema.ValidationError, match=message):
        _validate(failover_crd(), failover)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("heartbeatInterval",), "30 seconds", "does not match"),
        (("timeouts", "heartbeat"), "PT1M", "does not match"),
        (("workloads", 0, "kind"), "DaemonSet", "'DaemonSet' is not one of"),
        (("operatorID",), "", "should be non-empty"),
    ],
)
def test_the_failover_group_schema_rejects_bad_groups(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    group = _sample("FailoverGroup")
    node = group["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=message):
        _validate(failover_group_crd(), group)
