"""The two resources: valid manifests load; bad ones fail naming the field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from fsm.models import Failover, FailoverGroup, RequestError, check_request, format_duration, parse_duration
from tests.factories import SHOP_GROUP, failover, group


def _locs(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in e["loc"]) for e in error.errors()]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("90s", 90), ("1h30m", 5400), ("1m30s", 90), ("250ms", 0.25), ("2h", 7200), (45, 45)],
)
def test_durations_parse_like_go(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "-5m", "0s", "5m junk", True])
def test_malformed_durations_are_refused_with_the_text(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_round_trip_through_the_wire_format() -> None:
    g = group()
    dumped = g.model_dump(by_alias=True, mode="json")
    assert dumped["spec"]["timeouts"]["transitoryState"] == "5m"
    assert dumped["spec"]["heartbeatInterval"] == "30s"
    assert format_duration(timedelta(seconds=5400)) == "1h30m"
    assert FailoverGroup.model_validate(dumped) == g


def test_the_sample_group_loads_with_every_kind() -> None:
    g = group()
    assert g.key.operator_id == "ops"
    assert [str(r) for r in g.volume_refs()] == [
        "VolumeReplication shop/db-data",
        "VolumeReplication shop/cache-data",
    ]
    assert {r.kind for r in g.network_refs()} == {"VirtualService", "Ingress"}


def test_refs_name_every_object_of_the_group_workloads_first_flux_last() -> None:
    g = group()
    refs = g.refs()
    assert refs == [*g.workload_refs(), *g.volume_refs(), *g.network_refs(), *g.flux_refs()]
    assert len(set(refs)) == len(refs)
    assert refs[0].kind in {"Deployment", "StatefulSet", "CronJob"}
    assert refs[-1].kind in {"HelmRelease", "Kustomization"}


def test_unknown_mode_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        failover(mode="FAST")
    assert _locs(caught.value) == ["spec.failoverMode"]


def test_empty_group_list_names_the_field() -> None:
    data = failover().model_dump(by_alias=True, mode="json")
    data["spec"]["failoverGroups"] = []
    with pytest.raises(ValidationError) as caught:
        Failover.model_validate(data)
    assert _locs(caught.value) == ["spec.failoverGroups"]


def test_unknown_resource_kind_names_the_field() -> None:
    data = {**SHOP_GROUP, "spec": {**SHOP_GROUP["spec"], "workloads": [{"kind": "DaemonSet", "name": "x"}]}}
    with pytest.raises(ValidationError) as caught:
        FailoverGroup.model_validate(data)
    assert _locs(caught.value) == ["spec.workloads.0.kind"]


def test_malformed_duration_names_the_field() -> None:
    data = {**SHOP_GROUP, "spec": {**SHOP_GROUP["spec"], "timeouts": {"heartbeat": "soon"}}}
    with pytest.raises(ValidationError) as caught:
        FailoverGroup.model_validate(data)
    assert _locs(caught.value) == ["spec.timeouts.heartbeat"]
    assert "soon" in str(caught.value)


def test_unknown_spec_field_is_refused() -> None:
    data = failover().model_dump(by_alias=True, mode="json")
    data["spec"]["targetClsuter"] = "site-b"
    with pytest.raises(ValidationError) as caught:
        Failover.model_validate(data)
    assert "spec.targetClsuter" in _locs(caught.value)


def test_a_volume_in_two_workloads_is_refused() -> None:
    workloads = [
        {"kind": "StatefulSet", "name": "a", "volumeReplications": ["data"]},
        {"kind": "StatefulSet", "name": "b", "volumeReplications": ["data"]},
    ]
    with pytest.raises(ValidationError, match="'data' belongs to more than one workload"):
        group(workloads=workloads)


def test_target_equal_to_the_active_cluster_is_refused() -> None:
    with pytest.raises(RequestError) as caught:
        check_request(failover(target="site-a"), group(), active_cluster="site-a")
    assert caught.value.field == "spec.targetCluster"
    assert "already the active cluster of group shop/shop" in str(caught.value)


def test_unknown_target_cluster_is_refused() -> None:
    with pytest.raises(RequestError, match="unknown cluster 'site-c'"):
        check_request(
            failover(target="site-c"),
            group(),
            active_cluster="site-a",
            known_clusters=frozenset({"site-a", "site-b"}),
        )


def test_a_group_without_an_owner_must_be_given_one_first() -> None:
    with pytest.raises(RequestError, match="no active cluster recorded"):
        check_request(failover(), group(), active_cluster=None)


def test_group_namespace_defaults_to_the_failovers() -> None:
    f = Failover.model_validate(
        {
            "metadata": {"name": "f", "namespace": "apps"},
            "spec": {
                "targetCluster": "b",
                "failoverMode": "UPTIME",
                "failoverGroups": [{"name": "one"}, {"name": "two", "namespace": "other"}],
            },
        }
    )
    assert f.group_namespaces() == [("apps", "one"), ("other", "two")]
