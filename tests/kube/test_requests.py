"""What each step of a CONSISTENCY failover costs the API server, counted by the sandbox's RBAC layer
for the worker identity: the steps run one by one (workers.steps, the production KubeEffects) against
two sandbox clusters holding the sample group "shop" (nine objects on each). Also: a redelivered
step changes nothing, and a concurrent write between a step's read and its patch ends in a
conflict and a re-read, never in an overwrite."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, cast

import pytest
from kubernetes import client

from fsm.models import ANNOTATION_FENCE, ANNOTATION_REPLICAS
from fsm.plan import CATALOGUE, Step, StepType
from fsm.run import Run, new_run
from sandbox.kube import SandboxFleet
from tests.factories import all_refs, failover, group
from tests.kube.conftest import ref, stored, wait_for
from workers.errors import Fenced, NotFoundError
from workers.kube import KubeEffects
from workers.ports import Coordination, Role
from workers.steps import STEPS, Done, StepContext

pytestmark = pytest.mark.integration

TOKEN = 3
Requests = dict[tuple[str, str, str], int]  # (cluster, verb, resource) -> requests


def _each(cluster: str, verb: str, *resources: str) -> Requests:
    return {(cluster, verb, resource): 1 for resource in resources}


READ_ALL = {
    "list": ("statefulsets", "volumereplications"),
    "get": ("deployments", "cronjobs", "virtualservices", "ingresses", "helmreleases"),
}
# The requests each step sends (each wait: per check), both clusters; 44 for the run.
EXPECTED: dict[Step, Requests] = {
    Step.VALIDATE: {
        **{(c, verb, r): 1 for c in ("site-a", "site-b") for verb, rs in READ_ALL.items() for r in rs},
    },
    Step.RAISE_FENCE: {
        **_each("site-a", "patch", "failovergroups"),
        **_each("site-b", "patch", "failovergroups"),
    },
    Step.DISABLE_NETWORK: _each("site-a", "patch", "virtualservices", "ingresses"),
    Step.SCALE_DOWN_WORKLOADS: {
        # the workloads as validate read them (Recall): conditioned on that resourceVersion
        ("site-a", "patch", "statefulsets"): 2,
        **_each("site-a", "patch", "deployments", "cronjobs"),
    },
    Step.SUSPEND_FLUX: _each("site-a", "patch", "helmreleases"),
    Step.WAIT_SCALED_DOWN: {
        **_each("site-a", "list", "statefulsets"),
        **_each("site-a", "get", "deployments", "cronjobs"),
    },
    Step.DEMOTE_VOLUMES: {("site-a", "patch", "volumereplications"): 2},
    Step.WAIT_VOLUMES_DEMOTED: _each("site-a", "list", "volumereplications"),
    Step.PROMOTE_VOLUMES: {("site-b", "patch", "volumereplications"): 2},
    Step.WAIT_VOLUMES_PROMOTED: _each("site-b", "list", "volumereplications"),
    Step.VERIFY_VOLUMES: _each("site-b", "list", "volumereplications"),
    Step.SCALE_UP_WORKLOADS: {
        # the workloads as validate read them (Recall): conditioned on that resourceVersion
        ("site-b", "patch", "statefulsets"): 2,
        **_each("site-b", "patch", "deployments", "cronjobs"),
    },
    Step.RESUME_FLUX: _each("site-b", "patch", "helmreleases"),
    Step.WAIT_READY: {
        **_each("site-b", "list", "statefulsets"),
        **_each("site-b", "get", "deployments", "cronjobs", "helmreleases"),
    },
    Step.ENABLE_NETWORK: _each("site-b", "patch", "virtualservices", "ingresses"),
}


def _sent(fleet: SandboxFleet, before: dict[str, Counter[Any]]) -> Requests:
    sent: Requests = {}
    for cluster in fleet:
        for use, n in (cluster.used("worker") - before[cluster.name]).items():
            sent[(cluster.name, use.verb, use.resource)] = (
                sent.get((cluster.name, use.verb, use.resource), 0) + n
            )
    return sent


def _used(fleet: SandboxFleet) -> dict[str, Counter[Any]]:
    return {cluster.name: cluster.used("worker") for cluster in fleet}


def _run() -> Run:
    run = new_run(
        run_id="r-requests", failover=failover(), group=group(), source_cluster="site-a", now=time.time()
    )
    return run.model_copy(update={"token": TOKEN})


def _context(run: Run, effects: KubeEffects, step: Step) -> StepContext:
    planned = next(p for p in run.plan if p.step is step)
    return StepContext(
        run=run,
        cluster=run.cluster_for(planned.side),
        effects=effects,
        coordination=cast(Coordination, None),  # the steps counted here never reach DynamoDB
        now=time.time(),
        lease_seconds=30.0,
        holder="test",
        clusters=("site-a", "site-b"),
    )


def _kube_steps(run: Run) -> list[Step]:
    """The run's steps that talk to the clusters, in plan order."""
    return [
        p.step
        for p in run.plan
        if CATALOGUE[p.step].role is not None or p.step in (Step.VALIDATE, Step.RAISE_FENCE)
    ]


def _done(outcome: object) -> Done | None:
    return outcome if isinstance(outcome, Done) else None


def _applied(run: Run, done: Done) -> Run:
    updates = done.updates
    if updates is None:
        return run
    changes = {
        k: v
        for k, v in (("replicas", updates.replicas), ("requested_at", updates.requested_at))
        if v is not None
    }
    return run.model_copy(update=changes)


def test_each_step_sends_one_request_per_kind_read_and_one_per_write(
    fleet: SandboxFleet, effects: KubeEffects
) -> None:
    run = _run()
    assert _kube_steps(run) == list(EXPECTED)
    before = _used(fleet)
    assert effects.fence_enforced("site-a") and effects.fence_enforced("site-b")
    # Looked up once per cluster and worker process (again after fence_ttl), not per run.
    assert _sent(fleet, before) == {
        (c, "list", plural): 1
        for c in ("site-a", "site-b")
        for plural in ("validatingadmissionpolicies", "validatingadmissionpolicybindings")
    }
    total = 0
    for step, expected in EXPECTED.items():
        before = _used(fleet)
        outcome = STEPS[step](_context(run, effects, step))
        sent = _sent(fleet, before)
        assert sent == expected, step
        total += sum(sent.values())
        if CATALOGUE[step].type is StepType.WAIT:  # the first check was counted; wait for the controllers
            outcome = wait_for(lambda step=step, run=run: _done(STEPS[step](_context(run, effects, step))))
        assert isinstance(outcome, Done), (step, outcome)
        run = _applied(run, outcome)
    assert total == 44  # against 73 with a GET per object read and one before every PATCH


def test_a_redelivered_step_changes_nothing(fleet: SandboxFleet, effects: KubeEffects) -> None:
    """Every effect step sent twice: the second changes no object (no new resourceVersion anywhere),
    whether its writes were read-modify-write (workloads) or sent without a read."""
    run = _run()
    for step in _kube_steps(run):
        ctx = _context(run, effects, step)
        if CATALOGUE[step].type is not StepType.EFFECT:
            continue
        first = STEPS[step](ctx)
        assert isinstance(first, Done)
        run = _applied(run, first)
        for cluster in fleet:
            cluster.controllers.paused = True
        time.sleep(0.05)  # a controller pass already running ends
        versions = {
            (c.name, str(r)): stored(c, r)["metadata"]["resourceVersion"]
            for c in fleet
            for r in all_refs(group())
        }
        again = STEPS[step](_context(run, effects, step))
        assert isinstance(again, Done), step
        after = {
            (c.name, str(r)): stored(c, r)["metadata"]["resourceVersion"]
            for c in fleet
            for r in all_refs(group())
        }
        assert after == versions, step
        for cluster in fleet:
            cluster.controllers.paused = False


def test_a_write_between_the_read_and_the_patch_is_re_read_not_overwritten(
    fleet: SandboxFleet, effects: KubeEffects
) -> None:
    """The StatefulSets are read by one LIST; someone scales db from 1 to 5 right before our patch: the
    patch (conditioned on the resourceVersion listed) gets 409, db is read again and 5 is remembered."""
    site_a, db = fleet["site-a"], ref("StatefulSet", "db")
    site_a.controllers.paused = True
    scaled: list[str] = []

    def someone_scales_db() -> None:  # the lease guard's hook: right before each of our patches
        if not scaled:
            obj = stored(site_a, db)
            obj["spec"]["replicas"] = 5
            scaled.append(site_a.store.put(obj)["metadata"]["resourceVersion"])

    assert effects.fence_enforced("site-a")  # looked up before counting (once per process)
    before = _used(fleet)
    changes = effects.make_many(
        "site-a",
        [db, ref("StatefulSet", "cache")],
        Role.PASSIVE,
        epoch=TOKEN,
        group="shop",
        before_write=someone_scales_db,
    )
    sent = _sent(fleet, before)
    assert [c.detail for c in changes] == [
        "replicas 5 -> 0 (remembered 5), Flux reconcile disabled",
        "replicas 2 -> 0 (remembered 2), Flux reconcile disabled",
    ]
    obj = stored(site_a, db)
    assert (obj["spec"]["replicas"], obj["metadata"]["annotations"][ANNOTATION_REPLICAS]) == (0, "5")
    # One LIST, the 409'd patch, the GET of db alone, its patch again, cache's patch.
    assert sent == {
        ("site-a", "list", "statefulsets"): 1,
        ("site-a", "patch", "statefulsets"): 3,
        ("site-a", "get", "statefulsets"): 1,
    }


def test_a_change_since_validate_read_it_is_read_again_not_overwritten(
    fleet: SandboxFleet, effects: KubeEffects
) -> None:
    """scale_down computes db's patch from the object as validate read it (no read of its own); db was
    scaled from 1 to 5 since: the patch gets 409, db is read again, 5 is remembered."""
    site_a, db, cache = fleet["site-a"], ref("StatefulSet", "db"), ref("StatefulSet", "cache")
    site_a.controllers.paused = True
    assert effects.fence_enforced("site-a")
    effects.observe_many("site-a", [db, cache])  # what validate does
    obj = stored(site_a, db)
    obj["spec"]["replicas"] = 5
    site_a.store.put(obj)
    before = _used(fleet)
    changes = effects.make_many("site-a", [db, cache], Role.PASSIVE, epoch=TOKEN, group="shop")
    assert [c.detail for c in changes] == [
        "replicas 5 -> 0 (remembered 5), Flux reconcile disabled",
        "replicas 2 -> 0 (remembered 2), Flux reconcile disabled",
    ]
    assert stored(site_a, db)["metadata"]["annotations"][ANNOTATION_REPLICAS] == "5"
    assert _sent(fleet, before) == {
        ("site-a", "patch", "statefulsets"): 3,
        ("site-a", "get", "statefulsets"): 1,
    }
    # Sent again (a redelivered step): the objects recalled are passive, so they are read, not trusted.
    before = _used(fleet)
    again = effects.make_many("site-a", [db, cache], Role.PASSIVE, epoch=TOKEN, group="shop")
    assert [c.changed for c in again] == [False, False]
    assert _sent(fleet, before) == {("site-a", "list", "statefulsets"): 1}


def test_the_fence_is_raised_in_one_patch_and_never_lowered(
    fleet: SandboxFleet, effects: KubeEffects
) -> None:
    """No read: the cluster's policy (deploy/fencing) refuses a lower fence, the same one is a no-op."""
    site_a, key = fleet["site-a"], group().key
    shop = ref("FailoverGroup", "shop")
    assert effects.raise_fence("site-a", key, token=5).changed
    raised = stored(site_a, shop)["metadata"]
    assert raised["annotations"][ANNOTATION_FENCE] == "5"
    effects.raise_fence("site-a", key, token=5)  # a redelivered step
    assert stored(site_a, shop)["metadata"]["resourceVersion"] == raised["resourceVersion"]
    before = _used(fleet)
    with pytest.raises(Fenced, match="only grows") as caught:
        effects.raise_fence("site-a", key, token=4)  # a run older than the one that raised it to 5
    assert (caught.value.cluster, caught.value.obj) == ("site-a", "FailoverGroup shop/shop")
    assert stored(site_a, shop)["metadata"]["annotations"][ANNOTATION_FENCE] == "5"
    assert _sent(fleet, before) == {("site-a", "patch", "failovergroups"): 1}
    with pytest.raises(NotFoundError):  # raise_fence notes a cluster without the group and goes on
        effects.raise_fence("site-a", key.model_copy(update={"name": "other"}), token=5)


def test_without_the_fence_policies_every_write_is_read_modify_write(
    fleet: SandboxFleet, clients: Any
) -> None:
    """On a cluster that does not enforce deploy/fencing, the resourceVersion is what stops a stale
    write held on its way (tests/chaos/test_paused_worker.py): every object is read before its patch,
    the fence too, and a fence above the run's token is refused before anything is sent."""
    site_a, run = fleet["site-a"], _run()
    admin = site_a.api_client("admin")
    try:
        admission = client.AdmissionregistrationV1Api(admin)
        admission.delete_validating_admission_policy_binding("failover-fence.hahomelabs.com")
    finally:
        admin.close()
    effects = KubeEffects(clients)
    assert not effects.fence_enforced("site-a") and effects.fence_enforced("site-b")
    before = _used(fleet)
    assert isinstance(STEPS[Step.DISABLE_NETWORK](_context(run, effects, Step.DISABLE_NETWORK)), Done)
    assert _sent(fleet, before) == {
        **_each("site-a", "get", "virtualservices", "ingresses"),
        **_each("site-a", "patch", "virtualservices", "ingresses"),
    }
    before = _used(fleet)
    assert effects.raise_fence("site-a", group().key, token=TOKEN).changed
    assert not effects.raise_fence("site-a", group().key, token=TOKEN).changed  # read: already there
    with pytest.raises(Fenced, match="above this run's token"):
        effects.raise_fence("site-a", group().key, token=TOKEN - 1)
    assert _sent(fleet, before) == {
        ("site-a", "get", "failovergroups"): 3,
        ("site-a", "patch", "failovergroups"): 1,
    }
