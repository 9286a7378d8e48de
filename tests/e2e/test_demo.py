"""The README's first command, end to end: ``failoverctl demo`` exits 0 and reports both runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_demo_runs_both_failovers_and_stops_what_it_started(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("failoverctl")
    result = subprocess.run(
        [str(script), "demo"],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "CONSISTENCY site-a→site-b: SUCCESS" in result.stdout
    assert "UPTIME site-b→site-a: SUCCESS" in result.stdout
    assert "downtime 0.00s" in result.stdout
    assert "history in DynamoDB: 2 records; active cluster now site-a" in result.stdout
    assert "Failover shop/move-shop status: SUCCESS" in result.stdout
    assert "Primary (spec primary)" in result.stdout
