"""README "Try it with kubectl", run as written: the commands of its shell blocks, parsed out of the
README (so the two cannot drift), as processes in order: the sandbox and the watcher in the
background as the blocks of terminals 1 and 2, then every line of terminal 3, each in a shell that
sourced the env file first. The user's own group moves to site-b and back, both SUCCESS."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.sandbox_processes import (
    alive,
    descendants,
    shell_env,
    stop,
    wait_for_file,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
DOCUMENTED_ENV_FILE = "/tmp/failover-sandbox.env"


def readme_blocks() -> dict[str, list[str]]:
    """The section's ``sh`` blocks by their first line (``# terminal N: ...``), as command lines."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Try it with kubectl\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        first, *lines = block.strip().splitlines()
        blocks[first.split(":")[0].removeprefix("# ")] = [line for line in lines if line.strip()]
    return blocks


def _started(command: str, env_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            ["bash", "-c", command.replace(DOCUMENTED_ENV_FILE, str(env_file))],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=shell_env(),
            cwd=ROOT,
            start_new_session=True,
        )


def _wait_for_text(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} after {timeout:g}s: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def _run(line: str, preamble: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    script = "\n".join([*preamble, line]).replace(DOCUMENTED_ENV_FILE, str(env_file))
    return subprocess.run(
        ["bash", "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=shell_env(),
        cwd=ROOT,
        timeout=60,
    )


def test_the_readme_walk_through_moves_your_own_group_and_back(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (the walk-through is kubectl's)")
    blocks = readme_blocks()
    assert list(blocks)[:3] == ["terminal 1", "terminal 2", "terminal 3"]  # 4: Flower, optional
    env_file = tmp_path / "sandbox.env"
    sandbox = _started("\n".join(blocks["terminal 1"]), env_file, tmp_path / "sandbox.log")
    watcher: subprocess.Popen[bytes] | None = None
    results: list[tuple[str, subprocess.CompletedProcess[str]]] = []
    try:
        wait_for_file(env_file, sandbox, tmp_path / "sandbox.log")
        watcher = _started("\n".join(blocks["terminal 2"]), env_file, tmp_path / "watcher.log")
        _wait_for_text(tmp_path / "watcher.log", "watcher running on site-a, site-b", watcher)
        preamble: list[str] = []
        for line in blocks["terminal 3"]:
            if line.startswith((". ", "source ")):
                preamble.append(line)
                continue
            began = time.monotonic()
            ran = _run(line, preamble, env_file)
            print(f"{time.monotonic() - began:6.1f}s {line}")
            results.append((line, ran))
            assert ran.returncode == 0, f"{line}\n{ran.stdout[-2000:]}\n{ran.stderr[-2000:]}"
        started = descendants(sandbox.pid)
    finally:
        if watcher is not None:
            stop(watcher)
        code = stop(sandbox)
    assert code == 0, (tmp_path / "sandbox.log").read_text()[-3000:]
    assert not [pid for pid in started if alive(pid)]
    assert "watcher stopped" in (tmp_path / "watcher.log").read_text()

    outputs = {line: ran.stdout for line, ran in results}
    adopted = outputs["failoverctl group adopt payments/payments"]
    # By the command, or by the watcher first (the group is unambiguous): site-a either way.
    assert re.search(r"payments/payments (adopted: site-a recorded|is already adopted: site-a)", adopted)
    moved = outputs["failoverctl watch payments/move-payments"].splitlines()
    assert moved[-1].startswith("CONSISTENCY site-a→site-b: SUCCESS"), moved[-3:]
    assert moved[-2] == "moved to site-b"  # the view's last line, ended before the summary
    back = outputs["failoverctl watch payments/bring-payments-home"].splitlines()
    assert back[-1].startswith("UPTIME site-b→site-a: SUCCESS"), back[-3:]
    waited = [out for line, out in outputs.items() if line.startswith("kubectl --context site-a wait")]
    assert [out.strip() for out in waited] == [
        "failover.crd.hahomelabs.com/move-payments condition met",
        "failover.crd.hahomelabs.com/bring-payments-home condition met",
    ]
    on_site_b = outputs[
        "kubectl --context site-b get deployments,statefulsets,volumereplications -n payments"
    ]
    assert re.search(r"deployment.apps/api\s+2/2", on_site_b) and "Primary" in on_site_b, on_site_b
    history = outputs["failoverctl history payments/payments"]
    assert history.count("SUCCESS") == 2 and "ADOPTED" in history, history
