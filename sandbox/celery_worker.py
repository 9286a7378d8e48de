"""Start and stop real Celery worker processes for tests and the demo (127.0.0.1 only).

A worker is ``celery -A workers.tasks worker`` started as production starts it (``failoverctl
worker``: ``python -m workers.run_worker``, Celery's worker command without the rest of its CLI), in a
subprocess of its own process group, so that a test can SIGKILL it whole (the main process and its
prefork child) to play a lost worker, or SIGSTOP and SIGCONT it whole to play a frozen one (a VM
paused, a long GC pause).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class WorkerProcess:
    def __init__(
        self,
        env: dict[str, str],
        *,
        name: str,
        queues: str,
        log_path: Path,
        concurrency: int = 1,
        pool: str = "prefork",
        app: str = "workers.tasks",
        celery_cli: bool = False,
    ) -> None:
        """``celery_cli``: start it as ``python -m celery -A <app> worker`` instead (how workers were
        started before ``workers.run_worker``; for benchmarks that compare the two)."""
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.name = name
        launcher = ["celery", "-A", app, "worker"] if celery_cli else ["workers.run_worker", "-A", app]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *launcher,
                f"--loglevel={env.get('FAILOVER_LOG_LEVEL', 'INFO')}",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                "-Q",
                queues,
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.log_path.read_text()[-3000:]}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): nothing is acknowledged."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP the whole worker: it holds its messages and connections but does nothing."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused worker: it carries on exactly where it stopped."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            os.killpg(self.process.pid, signal.SIGCONT)  # a paused worker handles SIGTERM only once resumed
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
