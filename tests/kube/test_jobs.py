"""CronJobs: suspended, their running Jobs waited for, and stopped with stop_jobs past a deadline."""

from __future__ import annotations

import pytest

from sandbox.kube import SandboxCluster
from tests.kube.conftest import ref, stored, wait_for
from workers.errors import NotFoundError, PermanentError
from workers.kube import KubeEffects
from workers.ports import Role

pytestmark = pytest.mark.integration

REPORT = ref("CronJob", "report")


def _jobs(cluster: SandboxCluster) -> list[str]:
    items, _ = cluster.store.list("jobs.batch", "shop")
    return [job["metadata"]["name"] for job in items]


def test_a_running_job_is_waited_for_and_stopped(effects: KubeEffects, site_a: SandboxCluster) -> None:
    site_a.controllers.job_duration = None  # the Job never finishes on its own
    job = site_a.controllers.start_job("shop", "report")
    assert job is not None
    other = site_a.controllers.start_job("shop", "report")
    assert other is not None
    site_a.store.put(  # a Job of another owner: never ours to stop
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "backup", "namespace": "shop"},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "b", "image": "b"}]}}
            },
        }
    )
    assert effects.make_passive("site-a", REPORT, epoch=2).changed
    assert stored(site_a, REPORT)["spec"]["suspend"] is True
    check = effects.check("site-a", REPORT, Role.PASSIVE)
    assert not check.reached
    assert check.detail == (
        f"suspended, 2 Job(s) still running: {job['metadata']['name']}, {other['metadata']['name']}"
    )

    stopped = effects.stop_jobs("site-a", REPORT)
    assert stopped.changed and stopped.action == "stop_jobs"
    assert stopped.detail == f"deleted running Jobs {job['metadata']['name']}, {other['metadata']['name']}"
    assert _jobs(site_a) == ["backup"]
    wait_for(lambda: effects.check("site-a", REPORT, Role.PASSIVE).reached)
    again = effects.stop_jobs("site-a", REPORT)
    assert (again.changed, again.detail) == (False, "no running Jobs")


def test_a_job_that_finishes_by_itself_is_left_alone(effects: KubeEffects, site_a: SandboxCluster) -> None:
    job = site_a.controllers.start_job("shop", "report")
    assert job is not None
    effects.make_passive("site-a", REPORT, epoch=2)
    assert not effects.check("site-a", REPORT, Role.PASSIVE).reached
    wait_for(lambda: effects.check("site-a", REPORT, Role.PASSIVE).reached)  # job_duration 0.3s
    assert effects.stop_jobs("site-a", REPORT).changed is False
    assert _jobs(site_a) == [job["metadata"]["name"]]


def test_a_suspended_cronjob_resumes(effects: KubeEffects, site_b: SandboxCluster) -> None:
    assert not effects.check("site-b", REPORT, Role.ACTIVE).reached
    assert effects.make_active("site-b", REPORT, epoch=3).detail == "suspend true -> false"
    assert effects.check("site-b", REPORT, Role.ACTIVE).reached
    assert site_b.controllers.start_job("shop", "report") is not None


def test_stop_jobs_is_for_cronjobs_only(effects: KubeEffects) -> None:
    with pytest.raises(PermanentError, match="stop_jobs applies to CronJobs, not to Deployment") as raised:
        effects.stop_jobs("site-a", ref("Deployment", "web"))
    assert (raised.value.cluster, raised.value.obj) == ("site-a", "Deployment shop/web")
    with pytest.raises(NotFoundError):
        effects.stop_jobs("site-a", ref("CronJob", "nightly"))
