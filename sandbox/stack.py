"""Settings for a local stack (tests, the demo, the benchmark): one place that says how a test
stack differs from production, and the environment that gives a worker process the same settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fsm.plan import Timing
from workers.settings import Settings
from workers.trust import RunSigner

# Deadlines and backoff short enough for tests against fakes and sandbox clusters.
FAST_TIMING = Timing(
    poll_initial=0.05,
    poll_factor=1.5,
    poll_max=0.2,
    retry_initial=0.05,
    retry_max=0.2,
    max_attempts=4,
    effect_timeout=30,
    wait_timeout=30,
    coordination_timeout=30,
)

# The run key of every local stack (tests, the demo, the benchmark): runs stay authenticated there
# too. Known to anyone who reads this file, so never a production key.
SANDBOX_RUN_KEY = "sandbox-run-key-not-secret-never-use-in-production"

# The operatorID of every local stack's groups: the sample groups (sandbox/samples) say it, the demo and
# `failoverctl sandbox up` export it as FAILOVER_OPERATOR_ID, so a watcher started with that
# environment takes their Failovers (tests check the samples against it).
SANDBOX_OPERATOR_ID = "failover-orchestrator"

# Restore a dead worker's unacknowledged messages within seconds, not minutes.
FAST_RESTORE = {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}


def stack_settings(
    redis_url: str, prefix: str, *, timing: Timing, visibility_timeout: float = 3.0, **overrides: Any
) -> Settings:
    """Settings of a stack whose keys, broker keys and queue all live under ``prefix``."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "broker_prefix": prefix,
        "queue": f"{prefix}steps",
        "timing": timing,
        "visibility_timeout": visibility_timeout,
        "broker_transport_extra": FAST_RESTORE,
        "redrive_after": 5.0,
        "run_key": SANDBOX_RUN_KEY,
        **overrides,
    }
    return Settings(**values)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process that must see ``settings`` (plus ``extra`` variables)."""
    return {**settings.to_env(), **extra}


def component_env(
    env: Mapping[str, str], kubeconfig_for: Callable[[str], Path], component: str
) -> dict[str, str]:
    """``env`` for one component's process: its own kubeconfig (``SandboxFleet.kubeconfig_for``), so
    the worker, watcher, health checker and ``failoverctl`` (``operator``) each act as their own
    identity of deploy/rbac, as the shipped manifests mount one kubeconfig key per pod."""
    return {**env, "FAILOVER_KUBECONFIG": str(kubeconfig_for(component))}


def sandbox_signer() -> RunSigner:
    """What seals and opens runs in a local stack (its stores must agree with its workers)."""
    return RunSigner(SANDBOX_RUN_KEY)
