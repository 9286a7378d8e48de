"""The worker's memory: the safety net's setting, and what a worker's main process does not load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sandbox.stack import SANDBOX_RUN_KEY
from workers.app import celery_config
from workers.settings import Settings


def test_the_safety_net_is_celerys_max_memory_per_child_in_kib() -> None:
    assert celery_config(Settings(redis_url="redis://x"))["worker_max_memory_per_child"] == 400 * 1024
    off = Settings(redis_url="redis://x", max_memory_per_child=0)
    assert celery_config(off)["worker_max_memory_per_child"] is None


def test_the_sweepers_engine_loads_no_kubernetes_client_until_a_step_acts() -> None:
    """The engine a worker's main process builds for its sweeps (production adapters) never imports
    the Kubernetes client; the first use of its effects does, as a pool process's first step."""
    code = (
        "import json, sys\n"
        "from workers.tasks import build_engine\n"
        "engine = build_engine()\n"
        "before = 'kubernetes' in sys.modules\n"
        "effects = engine.adapters.effects\n"
        "many = effects.observe_many\n"
        "print(json.dumps([before, 'kubernetes' in sys.modules, type(effects.effects()).__name__]))\n"
    )
    env = {
        **os.environ,
        "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        "FAILOVER_ADAPTERS": "workers.container:production_adapters",
        "FAILOVER_AWS_REGION": "us-east-1",
        "FAILOVER_DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False, True, "KubeEffects"]
