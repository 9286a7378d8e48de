"""A liveness heartbeat file that a Kubernetes exec probe can check cheaply.

The Celery worker touches the file from its main loop: on ``worker_ready`` and on every event
heartbeat (``heartbeat_sent``, every 2 s while task events are on, as ``workers.app`` configures).
A worker whose main loop hangs stops touching it, and the probe::

    python -m workers.liveness check --max-age 60

exits 1 once the file is older than that (or missing), 0 otherwise, with one line saying why. The
watcher and the health checker call :func:`touch` from their own loops, each with its own file.

The file is ``$FAILOVER_LIVENESS_FILE`` (default ``/tmp/failover-liveness``; ``/tmp`` is an emptyDir
in the Deployments, the root filesystem being read-only). This module must stay cheap to import: the
probe runs it every few seconds, so it imports neither Celery (only inside
:func:`connect_celery_signals`) nor the settings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV_FILE = "FAILOVER_LIVENESS_FILE"
DEFAULT_FILE = "/tmp/failover-liveness"  # an emptyDir in the pod, private to it


def default_path() -> Path:
    return Path(os.environ.get(ENV_FILE) or DEFAULT_FILE)


def touch(path: Path | None = None, *, now: float | None = None) -> None:
    """Mark the process alive now (or at ``now``, for tests): create the file or bump its mtime."""
    path = path or default_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    stamp = time.time() if now is None else now
    os.utime(path, (stamp, stamp))


def check(path: Path | None = None, *, max_age: float, now: float | None = None) -> tuple[bool, str]:
    """Whether ``path`` was touched within ``max_age`` seconds, and a sentence saying so."""
    path = path or default_path()
    now = time.time() if now is None else now
    try:
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return False, f"not alive: {path} does not exist (the process never reported ready)"
    age = now - touched
    if age > max_age:
        return False, f"not alive: {path} last touched {age:.0f}s ago (more than {max_age:g}s)"
    return True, f"alive: {path} touched {max(age, 0.0):.1f}s ago"


def connect_celery_signals(path: Path | None = None) -> Callable[[], None]:
    """Touch the file when the worker is ready and on every event heartbeat of its main loop.

    Call at import time of the worker's task module: Celery decides whether to send
    ``heartbeat_sent`` when the worker's heart starts, from the receivers connected by then.
    Returns a function that disconnects both receivers again.
    """
    from celery.signals import heartbeat_sent, worker_ready

    def _touch(**_: Any) -> None:
        touch(path)

    worker_ready.connect(_touch, weak=False)
    heartbeat_sent.connect(_touch, weak=False)

    def disconnect() -> None:
        worker_ready.disconnect(_touch)
        heartbeat_sent.disconnect(_touch)

    return disconnect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.liveness", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="exit 0 if the file is fresh, 1 if stale or missing")
    check_cmd.add_argument("--max-age", type=float, default=60.0, help="seconds (default 60)")
    check_cmd.add_argument("--file", type=Path, default=None, help=f"default ${ENV_FILE} or {DEFAULT_FILE}")
    touch_cmd = commands.add_parser("touch", help="mark alive now")
    touch_cmd.add_argument("--file", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "touch":
        touch(args.file)
        return 0
    alive, message = check(args.file, max_age=args.max_age)
    print(message, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
