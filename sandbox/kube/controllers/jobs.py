"""CronJob and Job controllers.

:meth:`JobController.start_job` starts a running Job owned by a CronJob and lists it in the CronJob's
``status.active``; Jobs complete after ``job_duration`` seconds (never when None); finished or deleted
Jobs leave ``status.active`` (``lastSuccessfulTime`` records finished ones); ``cronjob_interval``
starts Jobs periodically; a suspended CronJob starts none. No Pods are created. This module must not
touch other kinds.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from sandbox.kube.controllers.base import ControllerBase, set_condition
from sandbox.kube.store import Body, utcnow

CRONJOBS, JOBS = "cronjobs.batch", "jobs.batch"


class JobController(ControllerBase):
    """CronJob and Job controllers."""

    def start_job(self, namespace: str, cronjob: str) -> Body | None:
        """Start a running Job owned by ``cronjob`` and list it in its ``status.active``.

        Returns the Job, or None when the CronJob is suspended (it starts no new Jobs).
        """
        cron = self.store.get(CRONJOBS, namespace, cronjob)
        if (cron.get("spec") or {}).get("suspend"):
            return None
        template = cron["spec"].get("jobTemplate") or {}
        index = int(time.time() // 60)
        while self.store.find(JOBS, namespace, f"{cronjob}-{index}") is not None:
            index += 1
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{cronjob}-{index}",
                "namespace": namespace,
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": utcnow()},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": cronjob,
                        "uid": cron["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        job = self.store.create(JOBS, body, namespace=namespace)
        job = self._run_job(job) or job
        ref = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job["metadata"]["name"],
            "namespace": namespace,
            "uid": job["metadata"]["uid"],
            "resourceVersion": job["metadata"]["resourceVersion"],
        }
        for _ in range(20):  # optimistic concurrency: re-read and retry on conflict
            cron = self.store.get(CRONJOBS, namespace, cronjob)
            status = copy.deepcopy(cron.get("status") or {})
            status["active"] = [*(status.get("active") or []), ref]
            status["lastScheduleTime"] = utcnow()
            if self._write_status(CRONJOBS, cron, status):
                break
        return self.store.get(JOBS, namespace, job["metadata"]["name"])

    def _run_job(self, job: Body) -> Body | None:
        status = {"active": 1, "ready": 1, "startTime": utcnow(), "uncountedTerminatedPods": {}}
        self._first_seen[("job", job["metadata"]["uid"])] = time.monotonic()
        if self._write_status(JOBS, job, status):
            return self.store.find(JOBS, job["metadata"]["namespace"], job["metadata"]["name"])
        return None

    def _affected(self, kind: str, obj: Body) -> list[tuple[str, str, str]]:
        """A Job's change (its end, its deletion) concerns the CronJob that owns it."""
        if kind != JOBS:
            return []
        namespace = obj["metadata"].get("namespace", "")
        return [
            (CRONJOBS, namespace, ref.get("name", ""))
            for ref in obj["metadata"].get("ownerReferences") or []
            if ref.get("kind") == "CronJob"
        ]

    def _jobs(self) -> None:
        jobs = {(j["metadata"]["namespace"], j["metadata"]["name"]): j for j in self._list(JOBS)}
        for job in jobs.values():
            self._job(job)
        for cron in self._list(CRONJOBS):
            self._cronjob(cron, lambda ns, name: jobs.get((ns, name)))

    def _job(self, job: Body) -> float | None:
        """Start or finish one Job; the seconds until it must be looked at again, if ever."""
        status = job.get("status") or {}
        if (job.get("spec") or {}).get("suspend") or status.get("completionTime"):
            return None
        if not status.get("startTime"):
            self._run_job(job)
            return None
        if self.job_duration is None:
            return None
        remaining = self._remaining(("job", job["metadata"]["uid"]), self.job_duration)
        if remaining > 0:
            return remaining
        done = {
            "succeeded": 1,
            "ready": 0,
            "startTime": status["startTime"],
            "completionTime": utcnow(),
            "uncountedTerminatedPods": {},
            "conditions": [],
        }
        for type_ in ("SuccessCriteriaMet", "Complete"):
            set_condition(
                done["conditions"],
                type_,
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
        self._write_status(JOBS, job, done)
        return None

    def _cronjob(self, cron: Body, find_job: Callable[[str, str], Body | None]) -> float | None:
        """Keep one CronJob's active list and start its periodic Jobs; when to look again, if ever."""
        meta = cron["metadata"]
        ns = meta["namespace"]
        status = copy.deepcopy(cron.get("status") or {})
        active = status.get("active") or []
        live, finished = [], []
        for ref in active:
            job = find_job(ns, ref.get("name") or "")
            if job is None or job["metadata"]["uid"] != ref.get("uid"):
                continue  # deleted: it simply leaves the active list
            if (job.get("status") or {}).get("completionTime"):
                finished.append(job)
            else:
                live.append(ref)
        if len(live) != len(active):
            if live:
                status["active"] = live
            else:
                status.pop("active", None)
            if finished:
                status["lastSuccessfulTime"] = max(j["status"]["completionTime"] for j in finished)
            self._write_status(CRONJOBS, cron, status)
        key = (ns, meta["name"])
        interval = self.cronjob_interval
        if not interval or (cron.get("spec") or {}).get("suspend"):
            return None
        last = self._last_auto_job.setdefault(key, time.monotonic())
        if time.monotonic() - last >= interval:
            self._last_auto_job[key] = time.monotonic()
            self.start_job(ns, meta["name"])
        return interval - (time.monotonic() - self._last_auto_job[key])
