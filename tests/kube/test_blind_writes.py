"""The write sent without a read (workers.kube_many, on a cluster enforcing deploy/fencing) meets 409s
and a version gone as the read-modify-write does: sent again, the lease guard before every patch,
never a read in between (its patch does not depend on the object), ConflictError when 409s last."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sandbox.kube import SandboxCluster
from tests.kube.conftest import notes, ref
from tests.kube.test_errors import _serve_only_v1beta1
from workers.errors import ConflictError
from workers.kube import KubeEffects
from workers.ports import Role

pytestmark = pytest.mark.integration

VS = ref("VirtualService", "web")
DNS = "external-dns.alpha.kubernetes.io/controller"


def _sent(cluster: SandboxCluster, before: Counter[Any]) -> dict[tuple[str, str], int]:
    return {(use.verb, use.resource): n for use, n in (cluster.used("worker") - before).items()}


def test_a_409_on_a_blind_write_sends_the_same_patch_again_without_a_read(
    effects: KubeEffects, site_a: SandboxCluster
) -> None:
    assert effects.fence_enforced("site-a")  # looked up before counting
    guarded: list[int] = []
    site_a.faults.conflict_next(1)
    before = site_a.used("worker")
    changes = effects.make_many(
        "site-a", [VS], Role.PASSIVE, epoch=3, group="shop", before_write=lambda: guarded.append(1)
    )
    assert [c.changed for c in changes] == [True]
    assert site_a.faults.pending_conflicts == 0
    assert len(guarded) == 2  # the lease guard before each patch
    assert _sent(site_a, before) == {("patch", "virtualservices"): 2}
    assert notes(site_a, VS)["failover.hahomelabs.com/epoch"] == "3"


def test_endless_409s_on_a_blind_write_end_in_conflict_error(
    effects: KubeEffects, site_a: SandboxCluster
) -> None:
    assert effects.fence_enforced("site-a")
    guarded: list[int] = []
    site_a.faults.conflict_next(100)
    before = site_a.used("worker")
    with pytest.raises(ConflictError) as raised:
        effects.make_many(
            "site-a", [VS], Role.PASSIVE, epoch=3, group="shop", before_write=lambda: guarded.append(1)
        )
    assert (raised.value.cluster, raised.value.obj) == ("site-a", "VirtualService shop/web")
    assert "5 patches in a row got 409" in raised.value.message
    assert isinstance(raised.value.__cause__, ConflictError)
    assert len(guarded) == 5
    assert _sent(site_a, before) == {("patch", "virtualservices"): 5}
    assert "failover.hahomelabs.com/epoch" not in notes(site_a, VS)


def test_a_blind_write_to_a_version_gone_is_sent_again_where_the_kind_is_served(
    effects: KubeEffects, site_b: SandboxCluster
) -> None:
    assert effects.fence_enforced("site-b") and effects.target("site-b", VS).version == "v1"  # cached
    _serve_only_v1beta1(site_b)
    changes = effects.make_many("site-b", [VS], Role.ACTIVE, epoch=2, group="shop")
    assert [c.changed for c in changes] == [True]
    assert notes(site_b, VS)[DNS] == "dns-controller"
    assert effects.target("site-b", VS).version == "v1beta1"
