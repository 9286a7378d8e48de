"""`failoverctl sandbox up --env-file`: a shell that sources the file reaches the sandbox with
`failoverctl`, the printed exports are whole lines that bash runs, and Ctrl-C stops everything."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from sandbox.stack import SANDBOX_OPERATOR_ID
from tests.e2e.sandbox_processes import (
    FAILOVERCTL,
    alive,
    cluster_urls,
    descendants,
    exported_names,
    listening,
    shell_env,
    sourced,
    stop,
    wait_for_file,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _in_shell(env_file: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f". '{env_file}' && {command}"],
        capture_output=True,
        text=True,
        env=shell_env(),
        timeout=60,
        check=False,
    )


def _printed(log: Path, timeout: float = 30.0) -> list[str]:
    """The sandbox's stdout once it printed its last line (the worker log's path)."""
    deadline = time.monotonic() + timeout
    while "# worker log: " not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return log.read_text().splitlines()


def test_the_env_file_reaches_the_sandbox_and_ctrl_c_stops_everything(
    tmp_path: Path, redis_server_url: str
) -> None:
    env_file, log = tmp_path / "sandbox.env", tmp_path / "stdout"
    with log.open("wb") as output, (tmp_path / "stderr").open("wb") as errors:
        process = subprocess.Popen(
            [FAILOVERCTL, "sandbox", "up", "--env-file", str(env_file)],
            stdout=output,
            stderr=errors,
            env=shell_env(REDIS_URL=redis_server_url),
            cwd=tmp_path,
        )
    try:
        wait_for_file(env_file, process, tmp_path / "stderr")
        names = exported_names(env_file)
        values = sourced(env_file, names)
        started = descendants(process.pid)

        # Everything a watcher, a worker and failoverctl need, and KUBECONFIG for kubectl.
        for name in ("KUBECONFIG", "FAILOVER_KUBECONFIG", "SANDBOX_WATCHER_KUBECONFIG", "FAILOVER_RUN_KEY"):
            assert Path(values[name]).is_file() if "KUBECONFIG" in name else values[name], name
        assert values["FAILOVER_OPERATOR_ID"] == SANDBOX_OPERATOR_ID
        assert json.loads(values["FAILOVER_CLUSTERS"]) == ["site-a", "site-b"]
        assert values["FAILOVER_REDIS_URL"] == redis_server_url
        assert values["AWS_DEFAULT_REGION"] == values["FAILOVER_AWS_REGION"] and values["AWS_ACCESS_KEY_ID"]
        assert values["FAILOVER_DYNAMODB_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        contexts = cluster_urls(Path(values["KUBECONFIG"]))
        assert len(contexts) == 2 and all(listening(url) for url in contexts)

        status = _in_shell(env_file, "failoverctl status -o json")
        assert status.returncode == 0 and json.loads(status.stdout) == [], status.stderr
        validate = _in_shell(env_file, "failoverctl validate shop/shop")
        assert validate.returncode == 0, validate.stderr
        assert "found on every cluster (site-a, site-b)" in validate.stdout
        history = _in_shell(env_file, "failoverctl history shop/shop -o json")
        assert history.returncode == 0 and json.loads(history.stdout) == [], history.stderr

        # Piped, every line is whole: no line longer than the longest export, each export runs in bash.
        printed = _printed(log)
        exports = [line for line in printed if line.startswith("export ")]
        assert [line.partition("=")[0].removeprefix("export ") for line in exports] == names
        assert max(len(line) for line in printed) == max(len(line) for line in exports)
        assert not any("\x1b[" in line for line in printed)
        for line in exports:
            name = line.removeprefix("export ").partition("=")[0]
            ran = subprocess.run(
                ["bash", "-c", f'{line}\nprintf %s "${name}"'], capture_output=True, text=True, check=True
            )
            assert ran.stdout == values[name], line
        prefix = values["FAILOVER_KEY_PREFIX"]
    finally:
        code = stop(process, signal.SIGINT)

    assert code == 0, (tmp_path / "stderr").read_text()[-3000:]
    assert started and not [pid for pid in started if alive(pid)]  # the worker and its pool children
    assert not any(listening(url) for url in [*contexts, values["FAILOVER_DYNAMODB_ENDPOINT_URL"]])
    assert not env_file.exists() and not Path(values["KUBECONFIG"]).parent.exists()
    client = redis.Redis.from_url(redis_server_url)
    try:
        assert list(client.scan_iter(match=f"{prefix}*")) == []
    finally:
        client.close()
