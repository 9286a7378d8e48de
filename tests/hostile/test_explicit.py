"""Issue 12's named cases one by one: the namespace grant on every path that checks a request, submit
refusing a target that already owns the group, the samples still loading, and one broken FailoverGroup
not stopping the health checker for the others."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import yaml
from typer.testing import CliRunner

from fsm.models import Failover, FailoverGroup, GroupKey, RequestError, check_request
from producers.cli import app
from producers.health import HealthChecker
from sandbox.fakes import FakeCoordination
from sandbox.kube import sample_manifests
from tests.hostile.conftest import SHOP, Stack

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def shop_group(namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    [group] = [d for d in sample_manifests() if d["kind"] == "FailoverGroup"]
    group = copy.deepcopy(group)
    group["metadata"]["namespace"] = namespace
    group["spec"].update(spec)
    return group


def failover(namespace: str, groups: list[dict[str, str]], target: str = "site-b") -> dict[str, Any]:
    return {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": "move", "namespace": namespace},
        "spec": {"targetCluster": target, "failoverMode": "CONSISTENCY", "failoverGroups": groups},
    }


def test_the_go_operators_samples_load_unchanged() -> None:
    for path in [ROOT / "deploy/examples/failover.yaml", ROOT / "sandbox/samples/shop.yaml"]:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "Failover":
                Failover.model_validate(document)
            elif document and document.get("kind") == "FailoverGroup":
                assert FailoverGroup.model_validate(document).spec.allowed_failover_namespaces == []


@pytest.mark.parametrize(
    ("allowed", "refused"), [([], True), (["other"], True), (["victim"], False), (["victim", "x"], False)]
)
def test_a_failover_moves_a_group_of_another_namespace_only_with_its_grant(
    allowed: list[str], refused: bool
) -> None:
    request = Failover.model_validate(
        failover("victim", [{"name": "shop", "namespace": "shop"}, {"name": "shop", "namespace": "payments"}])
    )
    payments = FailoverGroup.model_validate(shop_group("payments", allowedFailoverNamespaces=allowed))
    if refused:
        with pytest.raises(RequestError) as raised:
            check_request(request, payments, active_cluster="site-a")
        assert raised.value.field == "spec.failoverGroups[1].namespace"
        assert "allowedFailoverNamespaces" in raised.value.message and "'victim'" in raised.value.message
    else:
        check_request(request, payments, active_cluster="site-a")
    own = Failover.model_validate(failover("payments", [{"name": "shop"}]))
    check_request(own, payments, active_cluster="site-a")  # its own namespace needs no grant


@pytest.mark.integration
def test_submit_refuses_a_target_that_already_owns_the_group(stack: Stack, tmp_path: Path) -> None:
    before = stack.state()
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(failover("shop", [{"name": "shop"}], target="site-a")))

    result = runner.invoke(app, ["submit", "-f", str(path)])

    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        f"error: {path}: spec.targetCluster: 'site-a' is already the active cluster"
    )
    assert len(result.output.strip().splitlines()) == 1
    assert stack.state() == before


@pytest.mark.integration
@pytest.mark.parametrize("command", ["submit", "plan"])
def test_submit_and_plan_refuse_a_group_of_another_namespace_without_its_grant(
    stack: Stack, tmp_path: Path, command: str
) -> None:
    stack.fleet["site-b"].store.put(shop_group("payments"))
    stack.fleet["site-a"].store.put(shop_group("payments"))
    before = stack.state()
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(failover("victim", [{"name": "shop", "namespace": "payments"}])))

    result = runner.invoke(app, [command, "-f", str(path), "--context", "site-b"])

    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        f"error: {path}: spec.failoverGroups[0].namespace: FailoverGroup payments/shop"
    )
    assert len(result.output.strip().splitlines()) == 1
    assert stack.state() == before


class _Cluster:
    """A cluster client as the health checker uses it: list groups, read objects."""

    def __init__(self, name: str, groups: list[dict[str, Any]]) -> None:
        self.name = name
        self.groups = groups

    def list(self, resource: Any, label_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        return (self.groups if label_selector is None else []), "1"

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if namespace == "boom":
            raise ValueError("a bug while reading this group's objects")
        return None


def test_one_broken_failover_group_does_not_stop_the_health_checker_for_the_others() -> None:
    broken = [
        shop_group("bad-bool", suspended="yes"),
        shop_group("bad-duration", heartbeatInterval="99999999999999h"),
        shop_group("bad-shape", workloads="x" * 100_000),
        shop_group("boom"),  # valid, but judging it raises
        {"metadata": {"name": "no-spec", "namespace": "x"}},
    ]
    coordination = FakeCoordination(fakeredis.FakeRedis(), "hostile:")
    for namespace in ("shop", "boom"):
        coordination.set_initial_owner(
            GroupKey(operator_id=SHOP.operator_id, namespace=namespace, name="shop"), "site-a"
        )
    orchestrator = SimpleNamespace(coordination=coordination)
    clusters = {name: _Cluster(name, [*broken, shop_group()]) for name in ("site-a", "site-b")}
    checker = HealthChecker(orchestrator, clusters, operator_id=SHOP.operator_id)  # type: ignore[arg-type]

    for _ in range(2):
        outcomes = checker.run_once(now=1000.0)

    assert [str(o.group) for o in outcomes] == ["shop/shop"]
    assert {b.cluster for b in coordination.heartbeats(SHOP)} == {"site-a", "site-b"}
    assert len(checker.errors) == 2 * 4 + 1  # four invalid groups on each cluster, one check that raised
    assert all(len(error) < 700 for error in checker.errors.values())
