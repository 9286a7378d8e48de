"""The sandbox's samples and exports agree with the stack: one operatorID, passive forms as the
orchestrator makes them, and export lines a POSIX shell reads back exactly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sandbox.exports import export_lines, sandbox_exports, write_env_file
from sandbox.kube.samples import SAMPLES_DIR, SHOP_MANIFEST, make_passive
from sandbox.stack import SANDBOX_OPERATOR_ID

PAYMENTS = SAMPLES_DIR / "payments"


def _documents(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", [SHOP_MANIFEST, PAYMENTS / "site-a.yaml", PAYMENTS / "site-b.yaml"])
def test_every_sample_group_has_the_stacks_operator_id(path: Path) -> None:
    groups = [d for d in _documents(path) if d["kind"] == "FailoverGroup"]
    assert [g["spec"]["operatorID"] for g in groups] == [SANDBOX_OPERATOR_ID]  # type: ignore[index]


def test_site_b_holds_the_passive_form_of_site_a() -> None:
    active, passive = _documents(PAYMENTS / "site-a.yaml"), _documents(PAYMENTS / "site-b.yaml")
    kinds = [d["kind"] for d in active]
    assert kinds == [
        "Namespace",
        "StatefulSet",
        "VolumeReplication",
        "Deployment",
        "Ingress",
        "FailoverGroup",
    ]
    expected = [d if d["kind"] in ("Namespace", "FailoverGroup") else make_passive(d) for d in active]
    assert passive == expected


def test_the_failovers_name_the_payments_group() -> None:
    move, back = _documents(PAYMENTS / "move-to-site-b.yaml"), _documents(PAYMENTS / "back-to-site-a.yaml")
    assert [(d["spec"]["targetCluster"], d["spec"]["failoverMode"]) for d in move + back] == [  # type: ignore[index]
        ("site-b", "CONSISTENCY"),
        ("site-a", "UPTIME"),
    ]


def test_exports_are_read_back_exactly_by_a_posix_shell(tmp_path: Path) -> None:
    tricky = {
        "FAILOVER_CLUSTERS": '["site-a", "site-b"]',
        "FAILOVER_REDIS_URL": "redis://:p@ss w$rd'x@127.0.0.1:6379/0?a=1&b=2",
        "EMPTY": "",
    }
    exports = sandbox_exports(
        tricky,
        kubeconfig=tmp_path / "kube config",
        operator_kubeconfig=tmp_path / "op",
        components={"watcher": tmp_path / "w"},
    )
    assert exports["KUBECONFIG"] == str(tmp_path / "kube config")
    assert exports["SANDBOX_WATCHER_KUBECONFIG"] == str(tmp_path / "w")
    env_file = tmp_path / "env"
    write_env_file(env_file, exports, header="a header\nof two lines")
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".env.partial"))
    names = list(exports)
    script = f". '{env_file}' && " + " && ".join(f'printf "%s\\0" "${name}"' for name in names)
    read = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert dict(zip(names, read.split("\0")[:-1], strict=True)) == exports
    assert all(line.count("\n") == 0 for line in export_lines(exports))
