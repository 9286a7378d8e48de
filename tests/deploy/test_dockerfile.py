"""deploy/Dockerfile: a pinned base, a final stage without build tools, a non-root user, failoverctl."""

from __future__ import annotations

import json
import re
import tomllib

from tests.deploy.helpers import DEPLOY, DOCKERFILE, ROOT

BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|python3-dev|pip install|apt-get install)\b")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    out = []
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        instruction, _, arguments = stripped.partition(" ")
        out.append((instruction.upper(), arguments.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _base_image() -> str:
    args = dict(
        arg.split("=", 1) for instruction, arg in _instructions() if instruction == "ARG" and "=" in arg
    )
    return args["PYTHON_IMAGE"]


def test_the_base_is_an_exact_python_3_11_slim_bookworm_tag() -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", _base_image())
    for stage in _stages():
        assert stage[0][1].startswith("${PYTHON_IMAGE}"), "every stage from the pinned base"


def test_it_is_multi_stage_and_the_final_stage_has_no_build_tools() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert any(i == "COPY" and args.startswith("--from=build /opt/venv") for i, args in final)
    for instruction, args in final:
        if instruction == "RUN":
            assert not BUILD_TOOLS.search(args), f"build tooling in the runtime stage: {args}"


def test_it_runs_as_a_non_root_user_with_failoverctl_as_entrypoint() -> None:
    final = _stages()[-1]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert int(user) >= 10000, "a high uid, distinct from any host user"
    (entrypoint,) = [args for instruction, args in final if instruction == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["failoverctl"]


def test_the_image_installs_every_package_the_project_ships_but_the_sandbox() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        args.split()[0]
        for instruction, args in _stages()[0]
        if instruction == "COPY" and "--from" not in args
    }
    assert packages - {"sandbox"} <= copied, "the image must not ship the sandbox, and must ship the rest"
    assert "sandbox" not in copied
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "an allow-list: ignore everything, then name what the build needs"
    for package in packages - {"sandbox"}:
        assert f"!{package}/" in ignore


def test_flower_is_pinned_in_the_image() -> None:
    assert re.search(r"^ARG FLOWER_VERSION=\d+\.\d+\.\d+$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
