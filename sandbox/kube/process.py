"""One sandbox cluster in its own process, so that its API server does not share the caller's cores.

``python -m sandbox.kube --name site-a --port 0`` starts a
:class:`~sandbox.kube.cluster.SandboxCluster` and prints one JSON line: its name, URL, pid and the
bearer token of every identity (worker, watcher, health-checker, operator, admin); then it serves
until its standard input closes (the parent went away) or it gets SIGTERM/SIGINT. ``--options`` takes
the cluster's keyword arguments as JSON (``{"install_rbac": false, "workload_delay": 0.2}``);
``--sample-groups N`` loads N copies of the sample group first (namespaces ``shop-0000``...), active
unless ``--passive``.

While it runs it reads JSON commands, one per line, on standard input and answers each with one JSON
line: ``{"op": "down"}``/``{"op": "up"}`` (the "down" switch), ``{"op": "set", "target": "controllers"
or "faults", "name": ..., "value": ...}`` (a knob), ``{"op": "used", "user": "worker"}`` (the requests
an identity was allowed, counted by RBAC), ``{"op": "ping"}``.

:class:`ProcessCluster` is the parent's handle (what ``SandboxFleet(..., processes=True)`` holds): the
same ``name``/``url``/``token``/``kubeconfig()``/``api_client()``/``set_down()`` as a SandboxCluster,
knobs through :meth:`ProcessCluster.set_knob`, and the child's CPU time and resident memory. Its
``store`` and ``controllers`` live in the other process and are not reachable: tests that reach into
them use the default, in-process clusters. This module starts and talks to processes; it must not
implement API semantics.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sandbox.kube.identity import ADMIN, COMPONENTS, WORKER

_REPO_ROOT = Path(__file__).resolve().parents[2]
_IDENTITIES = (*COMPONENTS, ADMIN)
_KNOB_TARGETS = ("controllers", "faults")


# --- the child ------------------------------------------------------------------------------------


def _used(cluster: Any, user: str) -> list[list[Any]]:
    """``user``'s allowed requests summed over namespaces: ``[verb, group, resource[/sub], count]``."""
    totals: dict[tuple[str, str, str], int] = {}
    for use, count in cluster.used(user).items():
        key = (use.verb, use.group, use.resource)
        totals[key] = totals.get(key, 0) + count
    return [[*key, count] for key, count in sorted(totals.items())]


def _serve_commands(cluster: Any, stdin: IO[str], stdout: IO[str]) -> None:
    """Answer commands until standard input closes."""
    for line in stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            op = command.get("op")
            if op in ("down", "up"):
                cluster.set_down(op == "down")
            elif op == "set" and command.get("target") in _KNOB_TARGETS:
                setattr(getattr(cluster, command["target"]), command["name"], command["value"])
            elif op == "used":
                answer: dict[str, Any] = {"ok": True, "used": _used(cluster, command["user"])}
            elif op != "ping":
                raise ValueError(f"unknown command {line.strip()!r}")
            if op != "used":
                answer = {"ok": True}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            answer = {"ok": False, "error": str(exc)}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Run one cluster until standard input closes or a signal arrives (see the module docstring)."""
    from sandbox.kube.cluster import SandboxCluster
    from sandbox.kube.samples import load_sample_copies

    parser = argparse.ArgumentParser(description="Run one sandbox Kubernetes cluster in this process.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--options", default="{}", help="SandboxCluster keyword arguments as JSON")
    parser.add_argument("--sample-groups", type=int, default=0, help="copies of the sample group to load")
    parser.add_argument("--passive", action="store_true", help="load the sample groups passive")
    args = parser.parse_args(argv)
    cluster = SandboxCluster(args.name, host=args.host, port=args.port, **json.loads(args.options))
    if args.sample_groups:
        load_sample_copies(cluster, args.sample_groups, active=not args.passive)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with cluster:
        ready = {
            "name": cluster.name,
            "url": cluster.url,
            "port": cluster.port,
            "pid": os.getpid(),
            "tokens": {user: cluster.users.token(user) for user in _IDENTITIES},
        }
        print(json.dumps(ready), flush=True)
        reader = threading.Thread(
            target=lambda: (_serve_commands(cluster, sys.stdin, sys.stdout), stop.set()), daemon=True
        )
        reader.start()
        stop.wait()


# --- the parent's handle --------------------------------------------------------------------------


def cpu_seconds_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes_of(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ProcessCluster:
    """A sandbox cluster running in a child process; same addresses and kubeconfig as SandboxCluster.

    Args:
        name: the cluster (and kubeconfig context) name.
        sample_groups/passive: load that many copies of the sample group before serving.
        startup_timeout: seconds to wait for the child's ready line.
        cluster_options: SandboxCluster keyword arguments (JSON-serialisable: knobs, flags, token).
    """

    def __init__(
        self,
        name: str,
        *,
        sample_groups: int = 0,
        passive: bool = False,
        startup_timeout: float = 300.0,
        **cluster_options: Any,
    ) -> None:
        self.name = name
        self.host = str(cluster_options.pop("host", "127.0.0.1"))
        self._port = int(cluster_options.pop("port", 0))
        self._options = cluster_options
        self._sample_groups = sample_groups
        self._passive = passive
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._down = False

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ProcessCluster:
        """Start the child and wait until it serves."""
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Start the child without waiting (a fleet starts all its children, then waits for them)."""
        with self._lock:
            if self._process is not None:
                return
            command = [
                sys.executable,
                "-m",
                "sandbox.kube",
                "--name",
                self.name,
                "--host",
                self.host,
                "--port",
                str(self._port),
                "--options",
                json.dumps(self._options),
                "--sample-groups",
                str(self._sample_groups),
            ]
            if self._passive:
                command.append("--passive")
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
            )

    def wait_ready(self) -> ProcessCluster:
        """Wait for the child's ready line (its address and tokens)."""
        with self._lock:
            process = self._process
            if process is None:
                raise RuntimeError(f"sandbox cluster {self.name!r} was not started")
            if self._tokens:
                return self
            ready = self._read_line(self._startup_timeout)
            if ready is None:
                self._kill()
                raise RuntimeError(f"sandbox cluster {self.name!r} did not start (exit {process.poll()})")
            self._port = int(ready["port"])
            self._tokens = dict(ready["tokens"])
            return self

    def _read_line(self, timeout: float) -> dict[str, Any] | None:
        """The child's next JSON line, or None if it ended or said nothing within ``timeout``."""
        process = self._process
        if process is None or process.stdout is None:
            return None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0].strip():
            return None
        answer: dict[str, Any] = json.loads(result[0])
        return answer

    def _command(self, **command: Any) -> dict[str, Any]:
        with self._lock:
            process = self._process
            if process is None or process.stdin is None:
                raise RuntimeError(f"sandbox cluster {self.name!r} is not running")
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
            answer = self._read_line(30.0)
        if answer is None or not answer.get("ok"):
            raise RuntimeError(f"sandbox cluster {self.name!r} refused {command}: {answer}")
        return answer

    def stop(self) -> None:
        """Close the child's standard input (it stops its server and exits); kill it if it hangs."""
        with self._lock:
            process = self._process
            if process is None:
                return
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._kill()
            if process.stdout is not None:
                process.stdout.close()
            self._process = None
            self._tokens = {}

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> ProcessCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what a SandboxCluster offers too -------------------------------------------------------

    def set_down(self, down: bool) -> None:
        """Take the site off the network (state kept in the child) or bring it back."""
        self._command(op="down" if down else "up")
        self._down = down

    @property
    def is_down(self) -> bool:
        return self._process is not None and self._down

    def set_knob(self, target: str, name: str, value: Any) -> None:
        """Set a controller knob (``target="controllers"``) or a fault knob (``"faults"``) in the child."""
        if target not in _KNOB_TARGETS:
            raise ValueError(f"target must be one of {_KNOB_TARGETS}, not {target!r}")
        self._command(op="set", target=target, name=name, value=value)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def token(self) -> str:
        return self._tokens[WORKER]

    def kubeconfig(self, user: str = WORKER, *, context: str | None = None) -> dict[str, Any]:
        """This cluster's kubeconfig entries acting as ``user`` (see SandboxCluster.kubeconfig)."""
        name = context or (self.name if user == WORKER else f"{self.name}-{user}")
        return {
            "cluster": {"name": name, "cluster": {"server": self.url}},
            "user": {"name": name, "user": {"token": self._tokens[user]}},
            "context": {"name": name, "context": {"cluster": name, "user": name}},
        }

    def api_client(self, user: str = WORKER) -> Any:
        """A ``kubernetes.client.ApiClient`` acting as ``user`` (close it when done)."""
        from kubernetes import config

        entries = self.kubeconfig(user)
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [entries["cluster"]],
            "users": [entries["user"]],
            "contexts": [entries["context"]],
            "current-context": entries["context"]["name"],
        }
        return config.new_client_from_config_dict(document)

    @property
    def store(self) -> Any:
        raise AttributeError(
            f"sandbox cluster {self.name!r} runs in its own process: its store is not reachable "
            "(use an in-process SandboxCluster to reach into it)"
        )

    @property
    def controllers(self) -> Any:
        raise AttributeError(
            f"sandbox cluster {self.name!r} runs in its own process: use set_knob('controllers', ...)"
        )

    # --- measurements ---------------------------------------------------------------------------

    def requests_used(self, user: str = WORKER) -> dict[tuple[str, str, str], int]:
        """The requests ``user`` was allowed so far, by (verb, API group, resource), as
        ``SandboxCluster.used`` counts them in the child."""
        answer = self._command(op="used", user=user)
        return {(verb, group, resource): int(n) for verb, group, resource, n in answer["used"]}

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the child has used so far."""
        return 0.0 if self._process is None else cpu_seconds_of(self._process.pid)

    def rss_bytes(self) -> int:
        """The child's resident memory."""
        return 0 if self._process is None else rss_bytes_of(self._process.pid)

    def __repr__(self) -> str:
        state = "down" if self.is_down else "up" if self._process is not None else "stopped"
        return f"ProcessCluster({self.name!r}, {self.url}, {state})"
