"""A Celery app for tests/deploy/test_worker_hooks.py: the project's Celery app with the metrics and
liveness hooks connected exactly as workers/tasks.py should connect them, plus one task that runs a
whole failover's committed values through the default MetricsObserver inside a pool process."""

from __future__ import annotations

import os

from workers import liveness, metrics
from workers.app import create_app

app = create_app()

metrics.connect_celery_signals(
    int(os.environ["DEPLOYTEST_METRICS_PORT"]),
    queue_depth=lambda: {"probe": 1},
    admission_queued=lambda: {"interactive": 0, "bulk": 2},
)
liveness.connect_celery_signals()


@app.task(name="deploytest.observe_run")
def observe_run(run_id: str) -> None:
    from tests.deploy.test_metrics import Clock, committed, make_run, succeed

    observer = metrics.MetricsObserver()
    for value in committed(make_run(run_id=run_id), succeed, Clock()):
        observer.observe(value, "reason")
