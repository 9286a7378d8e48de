"""Every setting of the orchestrator, read once from the environment (prefix ``FAILOVER_``).

Workers, the watcher, the health checker, the CLI and Flower read the same settings, so that one
``.env`` or ConfigMap configures a whole site. Nothing here connects to anything.
"""

from __future__ import annotations

import json
import socket
from functools import cache
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fsm.plan import Timing
from workers.errors import OrchestratorError
from workers.trust import RunSigner, Signer, Unsigned


class MissingRunKey(OrchestratorError):
    """A component that reads or writes runs was started without ``FAILOVER_RUN_KEY``."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAILOVER_", extra="ignore", frozen=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("FAILOVER_REDIS_URL", "REDIS_URL"),
        description="Redis holding the run store; also the Celery broker unless broker_url is set.",
    )
    broker_url: str | None = Field(default=None, description="Celery broker; defaults to redis_url.")
    key_prefix: str = Field(default="fo:", description="Prefix of every run-store key in Redis.")
    queue: str = Field(default="failover", description="The Celery queue steps are sent to.")
    broker_prefix: str = Field(default="", description="Prefix of every broker key (kombu global_keyprefix).")
    per_cluster_queues: bool = Field(
        default=False,
        description="Route each cluster step to queue '<queue>.<cluster>' so in-cluster workers act on it.",
    )
    visibility_timeout: float = Field(
        gt=0,
        default=3600.0,
        description="Seconds before the Redis broker redelivers an unacknowledged message; "
        "must stay far above the longest countdown (poll_max, retry_max).",
    )
    task_events: bool = Field(
        default=True,
        description="Send Celery task events (Flower needs them; each costs a publish per task).",
    )
    broker_transport_extra: dict[str, float | int | str] = Field(
        default_factory=dict,
        description="More kombu Redis transport options, e.g. unacked_restore_interval (JSON).",
    )
    run_ttl: int = Field(gt=0, default=7 * 24 * 3600, description="Seconds a finished run stays in Redis.")
    lease_seconds: float = Field(
        gt=0, default=90.0, description="Lock lease; a step renews it once half has gone."
    )
    lease_margin: float = Field(
        ge=0,
        default=10.0,
        description="A step writes only while more than this many seconds of its lease are left "
        "(at most a quarter of the lease); it renews once half has passed.",
    )
    redrive_after: float = Field(
        gt=0,
        default=45.0,
        description="A run whose message is this many seconds overdue and unclaimed is sent again when no "
        "live worker says it consumes its queue (the backstop).",
    )
    redrive_interval: float = Field(gt=0, default=30.0, description="How often beat runs the overdue sweep.")
    status_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between two passes of the watcher over the unfinished Failovers, writing "
        "each one's status when its runs say something else (a failed write is made on the next pass).",
    )
    wake_waits: bool = Field(
        default=True,
        description="Wait steps register what they wait for and the watcher wakes them on a watch event "
        "(their polling countdown stays as the fallback); off: waits are only polled.",
    )
    outbox: bool = Field(
        default=True,
        description="Each step message is pushed onto the broker's queue by the script that commits the "
        "run (one round trip, both or neither) when the broker is the run store's Redis; off: sent "
        "through Celery after the commit.",
    )
    admission: bool = Field(
        default=True,
        description="Submitted runs wait in an admission queue and start while the site has room "
        '(README "Admission"); off: every run starts at once.',
    )
    admission_per_slot: int = Field(
        ge=1,
        default=8,
        description="Runs are admitted while the in-flight runs with a message due now (queued or "
        "running) are fewer than this per live worker slot.",
    )
    admitted_per_slot: int = Field(
        ge=1,
        default=50,
        description="Runs admitted and not finished, at most, per live worker slot (waiting ones included).",
    )
    max_runs_in_flight: int = Field(
        ge=1, default=2000, description="Runs admitted and not finished, at most (the whole site)."
    )
    bulk_admission_rate: float = Field(
        gt=0,
        default=20.0,
        description="Runs per second a Failover listing several groups is admitted at, at most.",
    )
    heartbeat_interval: float = Field(
        gt=0,
        default=1.0,
        description="Seconds between a worker's heartbeats in Redis, and between the sweeps its "
        "recovery thread runs (one worker of the site sweeps per interval).",
    )
    heartbeat_timeout: float = Field(
        gt=0,
        default=3.0,
        description="A worker whose heartbeat is older than this is dead: the step it claimed is sent again.",
    )
    schedule_to_start: float = Field(
        gt=0,
        default=2.0,
        description="A message due this long and not started, while a worker of its queue had a free "
        "slot and received no message for an interval, is sent again (the wait doubles with each "
        "resend, up to redrive_after).",
    )
    start_to_close: float = Field(
        gt=0,
        default=120.0,
        description="A step whose live worker has run it longer than this is sent again.",
    )
    recovery_interval: float = Field(
        gt=0,
        default=10.0,
        description="How often a worker checks the locks held under `holder` for runs missing in Redis "
        "(at once when Redis was found empty) and rebuilds them from the journal.",
    )
    recovery_thread: bool = Field(
        default=True,
        description="Workers run the heartbeat and recovery-sweep threads (off: beat's sweep only).",
    )
    holder: str = Field(
        default_factory=lambda: f"failover-orchestrator@{socket.gethostname()}",
        description="Name written as the lock holder (default: this host); set one per site, shared "
        "by its workers: a site rebuilds the runs of the locks held under its holder.",
    )
    dynamodb_table: str = Field(default="failover-orchestrator", description="The DynamoDB table.")
    dynamodb_endpoint_url: str | None = Field(
        default=None, description="DynamoDB endpoint (DynamoDB Local, moto); AWS's when unset."
    )
    dynamodb_retry_seconds: float = Field(
        ge=0,
        default=20.0,
        description="Budget of one DynamoDB request: throttling, 5xx and connection errors are retried "
        "with backoff (capped at 3 s) and jitter until it is spent, then the step fails temporarily.",
    )
    aws_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FAILOVER_AWS_REGION", "AWS_REGION"),
        description="AWS region of the table (else AWS_DEFAULT_REGION or the AWS profile's); only "
        "commands that read or write DynamoDB need one.",
    )
    operator_id: str = Field(default="default", description="The operatorID of the groups this stack owns.")
    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig with a context per cluster; in-cluster config when unset."
    )
    kube_connect_timeout: float = Field(
        gt=0,
        default=3.0,
        description="Seconds to connect to a Kubernetes API server (a refused or timed-out "
        "connect is not retried per request: the engine's backoff and force policy judge it).",
    )
    kube_read_timeout: float = Field(
        gt=0, default=15.0, description="Seconds one attempt of a Kubernetes request waits for the answer."
    )
    kube_retry_seconds: float = Field(
        ge=0,
        default=20.0,
        description="Budget of one Kubernetes request: 429, 5xx, read timeouts and resets are retried "
        "with backoff and jitter (at most 8 attempts) until it is spent; keep it well below the step "
        "deadlines of timing.",
    )
    kube_qps: float = Field(
        ge=0,
        default=200.0,
        description="Client-side rate limit per cluster and worker process: Kubernetes requests per "
        "second on average (a token bucket, as client-go's QPS; 0 turns it off). Waits are counted in "
        "failover_kube_throttle_seconds_total.",
    )
    kube_burst: int = Field(
        ge=1,
        default=400,
        description="Client-side rate limit per cluster and worker process: requests sent at once "
        "before FAILOVER_KUBE_QPS paces them (client-go's Burst).",
    )
    failover_cluster: str | None = Field(
        default=None,
        description="Unused (kept for older configurations): the watcher writes each Failover's status "
        "on the cluster where it sees the object.",
    )
    clusters: list[str] = Field(default_factory=list, description="Known cluster (kubeconfig context) names.")
    adapters: str = Field(
        default="workers.container:production_adapters",
        description="'module:function' returning the Adapters (effects, coordination) workers use.",
    )
    prefetch_multiplier: int = Field(
        ge=1,
        default=2,
        description="Step messages a worker reserves per pool slot (Celery's worker_prefetch_multiplier): "
        "2 keeps the next message at hand when a step ends instead of asking Redis for it first; a "
        "message reserved behind a step that hangs is sent again by the overdue sweep once another "
        "worker has a free slot (schedule_to_start).",
    )
    max_memory_per_child: int = Field(
        ge=0,
        default=400,
        description="MiB of resident memory after which a worker's pool process is replaced once its "
        "current task ends (Celery's worker_max_memory_per_child): a safety net against a leak, far "
        "above the ~110 MiB a pool process uses; 0 turns it off.",
    )
    metrics_port: int = Field(
        ge=0,
        le=65535,
        default=0,
        description="Port of the Prometheus /metrics endpoint of each component; 0 turns it off.",
    )
    log_json: bool = Field(default=False, description="JSON log lines (production) instead of console text.")
    log_level: str = Field(default="INFO", description="Log level of every component.")
    timing: Timing = Field(default_factory=Timing, description="Step deadlines and backoff.")
    run_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA-256 every run in Redis carries (a Secret); required unless "
        "insecure_dev. Runs that do not verify are refused (security.forged_run).",
    )
    run_key_previous: SecretStr | None = Field(
        default=None,
        description="The key before the last rotation: runs sealed with it are still accepted, and sealed "
        "again with run_key.",
    )
    insecure_dev: bool = Field(
        default=False,
        description="Development only: allow components to start without run_key (runs unauthenticated).",
    )

    def run_signer(self) -> Signer:
        """What seals and opens runs. Without ``run_key`` a worker, watcher or health checker refuses to
        start (MissingRunKey), unless ``insecure_dev`` says this is a development stack."""
        if self.run_key is not None and self.run_key.get_secret_value():
            previous = self.run_key_previous.get_secret_value() if self.run_key_previous else None
            return RunSigner(self.run_key.get_secret_value(), previous)
        if self.insecure_dev:
            return Unsigned()
        raise MissingRunKey(
            "FAILOVER_RUN_KEY is not set: runs in Redis cannot be authenticated; set it from the Secret "
            "failover-orchestrator-run-key (or FAILOVER_INSECURE_DEV=true on a development stack only)"
        )

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str) -> str:
        """Refused here, so that a typo fails as a setting and not as a connection error later."""
        scheme, separator, _ = value.partition("://")
        if not separator or scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected redis://HOST:PORT/DB (or rediss://, unix://), got {value!r}")
        try:
            urlsplit(value).port  # noqa: B018 - parsed for its ValueError on a bad port
        except ValueError as error:
            raise ValueError(f"{error} in {masked_url(value)!r}; expected redis://HOST:PORT/DB") from None
        return value

    @field_validator("dynamodb_endpoint_url")
    @classmethod
    def _an_endpoint(cls, value: str | None) -> str | None:
        """An empty or scheme-less endpoint is refused here, naming the variable, not by boto3 later."""
        if value is None:
            return None
        scheme, separator, rest = value.partition("://")
        if not value.strip():
            raise ValueError("empty: unset it to use AWS's endpoint, or give http(s)://HOST:PORT")
        if not separator or scheme not in ("http", "https") or not rest:
            raise ValueError(f"expected http(s)://HOST:PORT, got {value!r}")
        return value

    @model_validator(mode="after")
    def _countdowns_below_visibility(self) -> Settings:
        longest = max(self.timing.poll_max, self.timing.retry_max)
        if self.visibility_timeout < 4 * longest:
            raise ValueError(
                f"FAILOVER_VISIBILITY_TIMEOUT ({self.visibility_timeout:g}s) must be at least 4x the "
                f"longest countdown of FAILOVER_TIMING (poll_max, retry_max: {longest:g}s), or the "
                "broker redelivers messages still waiting for their time"
            )
        return self

    @model_validator(mode="after")
    def _heartbeat_outlives_its_interval(self) -> Settings:
        if self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise ValueError(
                f"FAILOVER_HEARTBEAT_TIMEOUT ({self.heartbeat_timeout:g}s) must be at least twice "
                f"FAILOVER_HEARTBEAT_INTERVAL ({self.heartbeat_interval:g}s), or live workers pass for dead"
            )
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as the environment another process reads them from (FAILOVER_*; lists,
        objects and booleans as JSON). A worker started with it sees exactly these settings."""
        env = {}
        for name, dumped in self.model_dump(mode="json").items():
            secret = getattr(self, name)
            value = secret.get_secret_value() if isinstance(secret, SecretStr) else dumped
            if value is None:
                continue
            env[f"FAILOVER_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url


def _masked(url: str) -> str:
    """``url`` without its password (what error messages and logs may show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for one-line errors); unparsable: as it is."""
    try:
        return _masked(url)
    except ValueError:
        return url


@cache
def get_settings() -> Settings:
    return Settings()
