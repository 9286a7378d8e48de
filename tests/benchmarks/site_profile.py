"""py-spy on the benchmark's processes during its busiest phase (``bench_site --profile SECONDS``).

``py-spy record --format raw --nolineno`` writes collapsed stacks (``frame;frame;... count``, one line
per distinct stack, the format flamegraph.pl and https://www.speedscope.app read as they are); the
files stay in a directory of their own, printed with the figures. The top frames by own time are the
leaf frames of those stacks, summed. py-spy attaches with ptrace (the benchmark runs as root). Only
the thread holding the GIL is sampled (``--gil``): py-spy's own idle detection does not recognise
the workers' waiting threads here (a thread pool's idle ``_worker``, ``Condition.wait``, a socket
read), which would otherwise fill the top; so the figures are where Python's CPU time goes, and
native code that releases the GIL (socket I/O, compression) is not in them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter (the dev extra installs it), or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record`` attached to each named process for ``seconds``, started at once."""

    def __init__(self, targets: dict[str, int], seconds: float, out: Path) -> None:
        self.out = out
        self.seconds = seconds
        self.files: dict[str, Path] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.errors: dict[str, str] = {}
        executable = py_spy()
        if executable is None:
            self.errors = {name: "py-spy not found (pip install 'py-spy>=0.4,<0.5')" for name in targets}
            return
        out.mkdir(parents=True, exist_ok=True)
        for name, pid in targets.items():
            path = out / f"{name}-{pid}.collapsed"
            self.files[name] = path
            command = [executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
            command += ["--gil", "--format", "raw", "--nolineno", "--output", str(path)]
            self.processes[name] = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
            )

    def collect(self, top: int = 10) -> dict[str, Any]:
        """Per process: the file, samples taken and the ``top`` frames by own time."""
        found: dict[str, Any] = {name: {"error": error} for name, error in self.errors.items()}
        for name, process in self.processes.items():
            try:
                _, err = process.communicate(timeout=self.seconds + 60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            path = self.files[name]
            if not path.exists():
                found[name] = {
                    "error": f"py-spy exited {process.returncode}: {err.decode(errors='replace')[-300:]}"
                }
                continue
            samples, frames = own_time(path.read_text(errors="replace"))
            found[name] = {"file": str(path), "samples": samples, "top": frames.most_common(top)}
        return found


def own_time(collapsed: str) -> tuple[int, Counter[str]]:
    """Samples in all and per leaf frame, from collapsed stacks (``a;b;c 12``)."""
    leaves: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaves[stack.rsplit(";", 1)[-1]] += int(count)
        total += int(count)
    return total, leaves


def report(found: dict[str, Any], seconds: float) -> str:
    lines = [f"profile (py-spy, {seconds:.0f} s, CPU samples, top frames by own time):"]
    for name, one in found.items():
        if "error" in one:
            lines.append(f"  {name}: {one['error']}")
            continue
        lines.append(f"  {name}: {one['samples']} samples, {one['file']}")
        for frame, count in one["top"]:
            share = count / one["samples"] * 100 if one["samples"] else 0.0
            lines.append(f"    {share:5.1f}%  {count:6d}  {frame}")
    return "\n".join(lines)
