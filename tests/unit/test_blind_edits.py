"""fsm.kinds.blind_edit: the patch sent without reading the object leaves every object exactly as the
read-modify-write edit would (passive_edit / active_edit), whatever form the object was in, and
changes nothing on an object already in the wanted form; workloads have none (their count is read)."""

from __future__ import annotations

from typing import Any

import pytest

from fsm.kinds import KINDS, WORKLOADS, Role, UnknownKind, active_edit, blind_edit, passive_edit
from sandbox.kube.patch import merge_patch
from sandbox.kube.samples import sample_manifests

STAMP = "2030-01-01T00:00:00Z"
SAMPLES = [
    (f"{obj['kind']}/{obj['metadata']['name']} {'active' if active else 'passive'}", obj)
    for active in (True, False)
    for obj in sample_manifests(active)
    if obj["kind"] in KINDS
]


def _read_modify_write(obj: dict[str, Any], role: Role, requested_at: str | None) -> dict[str, Any]:
    kind = obj["kind"]
    edit = (
        passive_edit(kind, obj) if role is Role.PASSIVE else active_edit(kind, obj, requested_at=requested_at)
    )
    return obj if edit is None else merge_patch(obj, edit.patch)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("name", "obj"), SAMPLES, ids=[name for name, _ in SAMPLES])
def test_a_blind_edit_ends_where_the_read_modify_write_ends(
    name: str, obj: dict[str, Any], role: Role
) -> None:
    for requested_at in (None, STAMP):
        edit = blind_edit(obj["kind"], role, requested_at=requested_at)
        if obj["kind"] in WORKLOADS:
            assert edit is None, name
            continue
        assert edit is not None, name
        blind = merge_patch(obj, edit.patch)
        assert blind == _read_modify_write(obj, role, requested_at), (name, role, requested_at)
        assert merge_patch(blind, edit.patch) == blind  # sent again: nothing changes


def test_every_managed_kind_has_a_rule_and_others_are_refused() -> None:
    for kind in KINDS:
        for role in Role:
            edit = blind_edit(kind, role)
            assert (edit is None) == (kind in WORKLOADS), kind
    with pytest.raises(UnknownKind):
        blind_edit("ConfigMap", Role.PASSIVE)
