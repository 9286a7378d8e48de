"""Controls through annotations on the Failover (kubectl, GitOps): the watcher turns
``failover.hahomelabs.com/pause: "true"`` into a pause, and ``"false"`` into a resume, each asked once,
and shows them in the Failover's status (state PAUSED, conditions Paused and OperatorControl) and
Events. Real watcher, workers, sandbox clusters and DynamoDB on moto."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from fsm.control_annotations import PAUSE, REASON, REQUESTED_BY
from fsm.models import Failover
from fsm.plan import Step
from fsm.run import RunStatus
from producers.kube import connect
from producers.watcher import FailoverWatcher
from sandbox.dynamo import dynamodb_client
from sandbox.kube.store import ObjectStore
from tests.chaos.checks import eventually
from tests.chaos.conftest import OPERATOR, TIMING, ChaosStack
from tests.chaos.monitor import ZERO_SERVING
from tests.controls.helpers import catch_up, lag, waiting_in
from workers.api import Orchestrator, run_ids_for
from workers.dynamo import DynamoCoordination

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "gitops-move"
MANIFEST: dict[str, Any] = {
    "apiVersion": "crd.hahomelabs.com/v1alpha1",
    "kind": "Failover",
    "metadata": {"name": NAME, "namespace": "shop"},
    "spec": {
        "targetCluster": "site-b",
        "failoverMode": "CONSISTENCY",
        "reason": "planned move",
        "failoverGroups": [{"name": "shop"}],
    },
}


def _annotate(store: ObjectStore, values: dict[str, str]) -> None:
    obj = store.get("Failover", "shop", NAME)
    obj["metadata"].setdefault("annotations", {}).update(values)
    store.put(obj)


def _status(store: ObjectStore) -> dict[str, Any]:
    return store.get("Failover", "shop", NAME).get("status") or {}


def test_pause_and_resume_through_the_failover_annotation(make_stack: Callable[..., ChaosStack]) -> None:
    stack = make_stack()
    stack.start_worker("w1")
    stack.monitor.open(ZERO_SERVING, "the run")
    lag(stack, "site-a", "workload_delay")  # holds the run in wait_scaled_down
    settings = stack.settings.model_copy(update={"timing": TIMING.model_copy(update={"wait_timeout": 300.0})})
    assert settings.dynamodb_endpoint_url is not None
    coordination = DynamoCoordination(
        settings.dynamodb_table, client=dynamodb_client(settings.dynamodb_endpoint_url)
    )
    clients = connect(stack.fleet.kubeconfig_for("watcher"), request_timeout=2.0)
    site_a = stack.fleet["site-a"].store
    run_id = run_ids_for(Failover.model_validate(MANIFEST))[("shop", "shop")]
    try:
        with (
            Orchestrator(settings, coordination=coordination) as handle,
            FailoverWatcher(handle, clients, operator_id=OPERATOR, status_interval=0.2, watch_timeout=1),
        ):
            site_a.put(MANIFEST)
            waiting_in(stack, run_id, Step.WAIT_SCALED_DOWN)

            _annotate(site_a, {PAUSE: "true", REQUESTED_BY: "gitops-bot", REASON: "change freeze"})
            stack.wait_for(run_id, lambda r: r.paused)
            status = eventually(
                lambda: _status(site_a).get("state") == "PAUSED" and _status(site_a), "PAUSED"
            )
            conditions = {c["type"]: c for c in status["conditions"]}
            assert conditions["Paused"]["status"] == "True", conditions
            assert "gitops-bot (change freeze)" in conditions["Paused"]["message"], conditions
            assert conditions["OperatorControl"]["reason"] == "PauseApplied", conditions
            time.sleep(1.0)  # several watcher passes over the still-annotated Failover: asked once only

            _annotate(site_a, {PAUSE: "false", REASON: "freeze over"})
            stack.wait_for(run_id, lambda r: not r.paused and r.controls[-1].action.value == "resume")
            catch_up(stack, "site-a", "workload_delay")
            run = stack.finish(run_id)
            assert run.status is RunStatus.SUCCESS, run.message
            assert [(c.action.value, c.source, c.who, c.why, c.outcome.value) for c in run.controls] == [
                ("pause", "annotation", "gitops-bot", "change freeze", "applied"),
                ("resume", "annotation", "gitops-bot", "freeze over", "applied"),
            ]
            final = eventually(
                lambda: _status(site_a).get("status") == "SUCCESS" and _status(site_a), "SUCCESS"
            )
            conditions = {c["type"]: c for c in final["conditions"]}
            assert (
                conditions["Paused"]["status"] == "False"
                and conditions["OperatorControl"]["reason"] == "ResumeApplied"
            )
            events, _ = site_a.list("Event", "shop")
            reasons = [e["reason"] for e in events if run_id.lower() in e["metadata"]["name"]]
            assert reasons.count("ControlApplied") == 2 and reasons.count("ControlRequested") == 2, reasons
    finally:
        for client in clients.values():
            client.close()
    stack.monitor.close(ZERO_SERVING, "the run")
