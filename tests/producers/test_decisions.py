"""``producers.decisions``: what the watcher does with a Failover object, and the statuses it writes."""

from __future__ import annotations

from typing import Any

import pytest

from producers.decisions import (
    FailoverAction,
    decide_failover,
    field_path,
    invalid_status,
    needs_write,
)
from tests.producers.conftest import failover_manifest


def with_status(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    manifest = failover_manifest(**spec)
    manifest["status"] = status
    return manifest


RUN = {"name": "shop", "namespace": "shop", "runId": "r1", "status": "IN_PROGRESS"}


@pytest.mark.parametrize(
    ("obj", "action", "words", "field"),
    [
        (
            failover_manifest(),
            FailoverAction.SUBMIT,
            "is new (no status): submit a run for shop/shop to site-b",
            None,
        ),
        (with_status({"status": "PENDING"}), FailoverAction.SUBMIT, "is new (PENDING)", None),
        (with_status({"status": "SUCCESS"}), FailoverAction.SKIP, "already SUCCESS", None),
        (with_status({"status": "FAILED"}, mode="FAST"), FailoverAction.SKIP, "already FAILED", None),
        (
            with_status({"status": "IN_PROGRESS", "failoverGroups": [RUN]}),
            FailoverAction.SKIP,
            "IN_PROGRESS",
            None,
        ),
        (with_status({"status": "IN_PROGRESS", "failoverGroups": []}), FailoverAction.SUBMIT, "is new", None),
        (
            failover_manifest(mode="FAST"),
            FailoverAction.INVALID,
            "spec.failoverMode: Input should be",
            "spec.failoverMode",
        ),
        (failover_manifest(groups=[]), FailoverAction.INVALID, "at least 1 item", "spec.failoverGroups"),
        (
            failover_manifest(groups=[{"name": ""}]),
            FailoverAction.INVALID,
            "spec.failoverGroups[0].name",
            "spec.failoverGroups[0].name",
        ),
        (
            failover_manifest(surprise=1),
            FailoverAction.INVALID,
            "spec.surprise: Extra inputs",
            "spec.surprise",
        ),
        (failover_manifest(dryRun=True), FailoverAction.DRY_RUN, "dry run", None),
    ],
)
def test_decide_failover(obj: dict[str, Any], action: FailoverAction, words: str, field: str | None) -> None:
    decision = decide_failover(obj)
    assert decision.action is action
    assert words in decision.reason
    assert decision.field == field


def test_field_path() -> None:
    assert field_path(("spec", "failoverGroups", 0, "name")) == "spec.failoverGroups[0].name"
    assert field_path(()) == "(object)"


def test_statuses_keep_transition_times_and_are_not_rewritten_when_unchanged() -> None:
    obj = failover_manifest()
    obj["metadata"]["generation"] = 3
    first = invalid_status(obj, "spec.failoverMode", "bad", now=100.0)
    assert first["status"] == "FAILED" and first["message"] == "invalid: spec.failoverMode: bad"
    [condition] = first["conditions"]
    assert condition["observedGeneration"] == 3 and condition["lastTransitionTime"] == "1970-01-01T00:01:40Z"
    obj["status"] = first
    again = invalid_status(obj, "spec.failoverMode", "bad", now=500.0)
    assert again == first and not needs_write(obj, again)
