"""Shared by the deploy tests: where things are, YAML loading, and resolving a container's command
against what the image really has (the ``failoverctl`` typer app, console scripts, modules)."""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.exceptions import TyperException
from typer.main import get_command

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

# Commands the compose file and the Deployments use that other engineers are adding to
# producers/cli.py right now. Until they land, tests that need them are skipped (visibly, with -ra);
# once they exist, the same tests check them like every other command.
COMMANDS_BEING_ADDED = {("watcher",), ("health-checker",), ("dynamodb", "init")}

KUSTOMIZE_KINDS = {"Kustomization", "Component"}


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _parsed(path: Path, mtime: float) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader) if doc)


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of ``path`` (parsed once per content; each caller gets its own copy)."""
    return copy.deepcopy(list(_parsed(path, path.stat().st_mtime)))


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/ (kustomization files excluded, and the optional
    deploy/rbac-namespaced component, whose patches repeat names: test_rbac_namespaced.py checks it)."""
    return sorted(
        p
        for p in DEPLOY.rglob("*.yaml")
        if p.name != "kustomization.yaml" and "docker" not in p.parts and "rbac-namespaced" not in p.parts
    )


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in load_documents(path):
            yield path, doc


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc.get("kind") == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in by_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def crd_schema_as_json_schema(node: Any) -> Any:
    """Kubernetes OpenAPI v3 -> JSON Schema for ``jsonschema``: ``nullable`` becomes a null type."""
    if isinstance(node, list):
        return [crd_schema_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: crd_schema_as_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
    return out


def validate_against_crd(crd: dict[str, Any], obj: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``obj`` fits the CRD's openAPIV3Schema."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft202012Validator(crd_schema_as_json_schema(schema)).validate(obj)


# FAILOVER_ variables that are not Settings fields, and who reads each.
ENV_OUTSIDE_SETTINGS = {
    "FAILOVER_KUBECONFIG": "failoverctl's --kubeconfig option",
    "FAILOVER_METRICS_PORT": "the metrics server's port (workers/metrics.py via the wiring)",
    "FAILOVER_REDIS_ADDRESS": "KEDA's redis scaler (addressFromEnv)",
    "FAILOVER_LIVENESS_FILE": "workers/liveness.py",
}


def load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``Settings()`` as a process with exactly ``env`` (plus no other FAILOVER_ variable) builds it."""
    import os

    from workers.settings import Settings

    for key in list(os.environ):
        if key.startswith("FAILOVER_") or key in ("REDIS_URL",):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    unknown = {
        key
        for key in env
        if key.startswith("FAILOVER_")
        and key.removeprefix("FAILOVER_").lower() not in Settings.model_fields
        and key not in ENV_OUTSIDE_SETTINGS
    }
    assert not unknown, f"settings nobody reads (typos?): {sorted(unknown)}"
    return Settings()


def settings_configmap() -> dict[str, str]:
    data: dict[str, str] = named("ConfigMap", "failover-orchestrator-settings")["data"]
    return data


# --- commands ------------------------------------------------------------------------------------


def failoverctl_group() -> Any:
    """The click command tree typer builds from ``producers.cli.app`` (typer vendors its click)."""
    from producers.cli import app

    group = get_command(app)
    assert hasattr(group, "commands"), "failoverctl should be a group of commands"
    return group


def resolve_failoverctl(args: list[str]) -> str | None:
    """None if ``failoverctl <args>`` parses (command path and options), else what is wrong.

    Skips the calling test when the command is one of :data:`COMMANDS_BEING_ADDED` and not there yet.
    """
    command = failoverctl_group()
    path: list[str] = []
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        word = rest.pop(0)
        sub = command.commands.get(word)
        if sub is None:
            wanted = (*path, word)
            if any(wanted == pending[: len(wanted)] for pending in COMMANDS_BEING_ADDED):
                pytest.skip(f"`failoverctl {' '.join(wanted)}` is being added to producers/cli.py elsewhere")
            return f"failoverctl has no command {' '.join(wanted)!r}"
        path.append(word)
        command = sub
    if hasattr(command, "commands"):
        return f"`failoverctl {' '.join(path)}` is a group, not a command"
    try:
        command.make_context(" ".join(["failoverctl", *path]), rest, resilient_parsing=False)
    except TyperException as error:
        return f"`failoverctl {' '.join(args)}`: {error}"
    return None


def console_script(name: str) -> str | None:
    """The ``module:function`` of an installed console script, or None."""
    for entry in importlib.metadata.entry_points(group="console_scripts", name=name):
        return entry.value
    return None


def resolve_celery(args: list[str]) -> str | None:
    """``celery -A module:attr <subcommand> ...``: the app must load and the subcommand exist.

    ``flower`` is a plugin subcommand the image installs (checked against the Dockerfile).
    """
    if console_script("celery") is None:
        return "no celery console script"
    if "-A" not in args:
        return "celery without -A names no app"
    target = args[args.index("-A") + 1]
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if app is None or type(app).__name__ != "Celery":
        return f"{target} is not a Celery app"
    subcommand = args[args.index("-A") + 2]
    if subcommand == "flower":
        if "flower==" not in DOCKERFILE.read_text(encoding="utf-8"):
            return "the image does not install flower"
        return None
    from celery.bin.celery import celery as celery_cli

    if subcommand not in celery_cli.commands:
        return f"celery has no subcommand {subcommand!r}"
    return None


def resolve_python_module(args: list[str]) -> str | None:
    """``python -m module ...``: the module must be importable in the image's environment."""
    if args[:2] != ["python", "-m"]:
        return f"not a python -m command: {args}"
    module = args[2]
    if importlib.util.find_spec(module) is None:
        return f"no module {module}"
    if not module.startswith(("fsm", "workers", "producers")):
        return f"{module} is not part of the image's packages"
    return None


def resolve_container_command(entrypoint: list[str], args: list[str]) -> str | None:
    """Resolve what a container runs: image ENTRYPOINT ``failoverctl`` unless overridden."""
    program = entrypoint[0] if entrypoint else "failoverctl"
    if program == "failoverctl":
        if console_script("failoverctl") != "producers.cli:main":
            return "failoverctl is not the console script producers.cli:main"
        return resolve_failoverctl([*entrypoint[1:], *args])
    if program == "celery":
        return resolve_celery([*entrypoint[1:], *args])
    if program == "python":
        return resolve_python_module([*entrypoint, *args])
    return f"unknown program {program!r}"
