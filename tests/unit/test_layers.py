"""What importing the producers loads: never the worker runtime, never the settings.

The import-linter contracts check the import graph; this checks the import itself, in a fresh
interpreter, so that a module-level side effect (an app built, settings read) cannot hide behind an
import the graph allows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

RUNTIME = ["celery", "workers.engine", "workers.steps", "workers.tasks", "workers.app", "workers.container"]


def _loaded_after_import(module: str, env: dict[str, str]) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps([m for m in {RUNTIME!r} if m in sys.modules]))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("module", ["producers.cli", "producers.watcher", "producers.health", "workers.api"])
def test_importing_a_producer_loads_no_worker_runtime(module: str) -> None:
    assert _loaded_after_import(module, dict(os.environ)) == []


def test_importing_the_cli_reads_no_settings() -> None:
    """Settings that cannot be parsed break a command (one line, exit 1), never the import."""
    env = {**os.environ, "FAILOVER_CLUSTERS": "not json", "FAILOVER_TIMING": "{bad"}
    assert _loaded_after_import("producers.cli", env) == []
