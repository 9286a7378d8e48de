"""docker-compose.yml: loads, runs commands that exist in the image, scales its workers, shares settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import COMPOSE, ROOT, load_settings, resolve_container_command

ORCHESTRATOR = ("dynamodb-init", "worker", "beat", "watcher", "health-checker", "flower")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _env_file(path: Path) -> dict[str, str]:
    """The variables of a compose env file (KEY=VALUE lines; # comments)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value
    return env


def test_the_stack_has_every_service() -> None:
    assert set(_services()) == {"redis", "dynamodb", *ORCHESTRATOR}
    assert _services()["dynamodb"]["image"].startswith("amazon/dynamodb-local:")
    assert re.fullmatch(r"amazon/dynamodb-local:\d+\.\d+\.\d+", _services()["dynamodb"]["image"])
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", _services()["redis"]["image"])


@pytest.mark.parametrize("name", ORCHESTRATOR)
def test_orchestrator_services_are_built_from_the_dockerfile(name: str) -> None:
    service = _services()[name]
    assert service["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


@pytest.mark.parametrize("name", ORCHESTRATOR)
def test_each_service_command_exists_in_the_image(name: str) -> None:
    service = _services()[name]
    problem = resolve_container_command(service.get("entrypoint", []), service.get("command", []))
    assert problem is None, problem


def test_the_table_init_is_the_failoverctl_dynamodb_init_one_shot() -> None:
    init = _services()["dynamodb-init"]
    assert init["command"] == ["dynamodb", "init"]
    assert init["restart"] == "on-failure"  # retried until DynamoDB Local answers, then done
    for name in ("worker", "watcher", "health-checker"):
        depends = _services()[name]["depends_on"]
        assert depends["dynamodb-init"] == {"condition": "service_completed_successfully"}
        assert depends["redis"] == {"condition": "service_healthy"}


def test_the_worker_scales() -> None:
    worker = _services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "fixed host ports would collide at --scale worker=N"
    assert "hostname" not in worker
    assert worker["environment"]["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/"), "tmpfs: fresh per start"
    assert worker["healthcheck"]["test"][:5] == ["CMD", "python", "-m", "workers.liveness", "check"]


def test_flower_has_basic_auth_from_the_environment_with_no_default_and_listens_on_loopback() -> None:
    flower = _services()["flower"]
    auth = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", auth), "required, no default"
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


REQUIRED_PASSWORD = "${REDIS_PASSWORD:?"


def test_redis_requires_a_password_with_no_default_and_every_service_uses_it() -> None:
    redis = _services()["redis"]
    command = redis["command"]
    password = command[command.index("--requirepass") + 1]
    assert password.startswith(REQUIRED_PASSWORD)
    assert redis["environment"]["REDISCLI_AUTH"] == password  # the healthcheck's redis-cli
    for name in ORCHESTRATOR:
        url = _services()[name]["environment"]["FAILOVER_REDIS_URL"]
        assert url.startswith(f"redis://:{REQUIRED_PASSWORD}") and url.endswith("@redis:6379/0"), name


def test_workers_and_flower_share_one_settings_file_that_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {tuple(_services()[name]["env_file"]) for name in ORCHESTRATOR}
    assert len(files) == 1
    (env_file,) = files.pop()
    env = _env_file(ROOT / env_file)
    assert "FAILOVER_REDIS_URL" not in env  # it carries the password: set by the compose file
    settings = load_settings({**env, "FAILOVER_REDIS_URL": "redis://:pw@redis:6379/0"}, monkeypatch)
    assert settings.redis_url == "redis://:pw@redis:6379/0"
    assert settings.dynamodb_endpoint_url == "http://dynamodb:8000"
    assert settings.clusters == ["site-a", "site-b"]


def test_depends_on_names_real_services() -> None:
    for name, service in _services().items():
        for dependency in service.get("depends_on", {}):
            assert dependency in _services(), f"{name} depends on unknown {dependency}"
            assert dependency != name
