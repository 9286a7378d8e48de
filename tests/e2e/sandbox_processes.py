"""Helpers for tests that run `failoverctl sandbox up` as a process: wait for its env file, read the
exports back through bash, find the processes it started and check that they and its servers stop."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

BIN = Path(sys.executable).parent
FAILOVERCTL = str(BIN / "failoverctl")


def shell_env(**extra: str) -> dict[str, str]:
    """The environment the documented commands run in: this venv's commands first on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"sandbox up exited {process.returncode}: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path} after {timeout:g}s: {log.read_text()[-3000:]}")
        time.sleep(0.2)


def sourced(env_file: Path, names: list[str]) -> dict[str, str]:
    """The values of ``names`` after a POSIX shell sources ``env_file`` (one NUL-separated read)."""
    script = f". {shlex.quote(str(env_file))} && " + " && ".join(
        f'printf "%s\\0" "${{{name}}}"' for name in names
    )
    result = subprocess.run(
        ["sh", "-c", script], capture_output=True, check=True, env=shell_env(), timeout=30
    )
    return dict(zip(names, result.stdout.decode().split("\0")[:-1], strict=True))


def exported_names(env_file: Path) -> list[str]:
    lines = [line for line in env_file.read_text().splitlines() if line.startswith("export ")]
    return [line.removeprefix("export ").partition("=")[0] for line in lines]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1):
            return True
    except OSError:
        return False


def cluster_urls(kubeconfig: Path) -> list[str]:
    config = yaml.safe_load(kubeconfig.read_text())
    return [c["cluster"]["server"] for c in config["clusters"]]


def stop(process: subprocess.Popen[bytes], how: int = signal.SIGTERM, timeout: float = 60.0) -> int:
    process.send_signal(how)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"still running {timeout:g}s after signal {how}") from None
