"""What every ``failoverctl`` command shares: its settings, its errors, its options and its readers.

The settings are read from the environment once per command, on first use, and kept in the click
context (:func:`settings_of`); settings that cannot be read end the command like any other error: one
line on stderr naming the variable and what is wrong with it, exit code 1.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from typer.core import TyperGroup

from fsm.models import FailoverGroup, GroupKey, excerpt
from fsm.run import Run
from producers.decisions import field_path, first_error
from producers.kube import FAILOVER_GROUPS, ClusterClient, current_context, kubeconfig_contexts
from producers.views import console
from workers.api import Orchestrator
from workers.errors import OrchestratorError
from workers.settings import MissingRunKey, Settings


def out() -> Console:
    """A console per command, so that the terminal's width (or COLUMNS) is read when it prints; off a
    terminal (a pipe, a file) lines are never wrapped or styled (:func:`producers.views.console`)."""
    return console()


def fail(message: str, code: int = 1) -> typer.Exit:
    # Each part that quotes input is cut to 200 characters already; this bounds the whole line.
    typer.echo(f"error: {excerpt(message, quote=False, limit=1000)}", err=True)
    return typer.Exit(code)


# --- the one place where an error becomes a line ------------------------------------------------

DEBUG_VARIABLE = "FAILOVERCTL_DEBUG"


def explain(error: Exception) -> str:
    """One line for an error a command did not turn into one itself: what failed and what to fix."""
    if isinstance(error, OrchestratorError):
        return error.describe()
    if isinstance(error, ValidationError | SettingsError):
        return f"settings: {settings_problem(error)}; fix it in the environment"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, yaml.YAMLError):
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return f"not valid YAML: {first}"
    detail = str(error).strip().splitlines()
    return (
        f"unexpected {type(error).__name__}: {detail[0] if detail else ''} "
        f"(set {DEBUG_VARIABLE}=1 for the traceback, and please report it)"
    )


class FailoverctlGroup(TyperGroup):
    """``failoverctl`` itself: every command runs inside :meth:`invoke`, the choke point where an
    error that escaped a command (a store that does not answer, a file, a kubeconfig) becomes one
    line on stderr and exit code 1, never a traceback. Usage errors stay click's (exit code 2)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, usage errors, aborts
            raise
        except Exception as error:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            raise fail(explain(error)) from error


# --- settings --------------------------------------------------------------------------------------


def settings_problem(error: ValidationError | SettingsError) -> str:
    """One line naming the environment variable that is wrong and how (the first, if several)."""
    if isinstance(error, SettingsError):
        # pydantic-settings says 'error parsing value for field "clusters" from source ...'; the
        # cause (a JSONDecodeError) says what is wrong with the value.
        found = re.search(r'field "(\w+)"', str(error))
        variable = f"FAILOVER_{found.group(1).upper()}" if found else "a FAILOVER_ variable"
        cause = error.__cause__
        detail = f"not valid JSON ({cause})" if cause is not None else str(error)
        return f"{variable}: {detail}"
    first = error.errors(include_url=False)[0]
    loc = list(first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if not loc:
        return message
    head = str(loc[0])
    variable = head if head.isupper() else f"FAILOVER_{head.upper()}"
    rest = field_path(loc[1:]) if len(loc) > 1 else ""
    return f"{variable}{f' ({rest})' if rest else ''}: {message}"


def load_settings() -> Settings:
    try:
        return Settings()
    except (ValidationError, SettingsError) as error:
        raise fail(f"settings: {settings_problem(error)}; fix it in the environment") from error


class CliConfig:
    """The settings of one command, read from the environment on first use and then kept."""

    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    """The command's settings (read once per command, kept in ``ctx.obj`` like patronictl's config)."""
    return ctx.ensure_object(CliConfig).settings


def require_run_key(settings: Settings) -> None:
    """A producer that submits runs refuses to start without the run key (one line, exit 1)."""
    try:
        settings.run_signer()
    except MissingRunKey as error:
        raise fail(str(error)) from error


def open_orchestrator(settings: Settings) -> Orchestrator:
    """An Orchestrator on the settings' stores, or one line saying why there is none (a missing AWS
    region or credentials surfaces from boto3 as its own exception, not as an OrchestratorError)."""
    try:
        return Orchestrator(settings)
    except OrchestratorError as error:
        raise fail(error.describe()) from error
    except Exception as error:
        detail = excerpt(str(error) or type(error).__name__, quote=False)
        raise fail(f"cannot open the coordination store or Redis: {detail}") from error


@contextmanager
def orchestrator(settings: Settings) -> Iterator[Orchestrator]:
    handle = open_orchestrator(settings)
    try:
        with handle:
            yield handle
    except OrchestratorError as error:
        raise fail(error.describe()) from error


# --- options and output ----------------------------------------------------------------------------


class ModeChoice(StrEnum):
    consistency = "consistency"
    uptime = "uptime"


class KindChoice(StrEnum):
    """The kinds of run whose machine ``failoverctl graph`` draws: the two modes and the internal ones."""

    consistency = "consistency"
    uptime = "uptime"
    standdown = "standdown"
    resolve = "resolve"


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table or json")]
OperatorOption = Annotated[
    str | None, typer.Option("--operator-id", help="operatorID of the group (default: settings)")
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        envvar="FAILOVER_KUBECONFIG",
        help="kubeconfig with one context per cluster (default: ~/.kube/config)",
    ),
]
ClusterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cluster",
        help="A cluster (kubeconfig context) to use; repeat for each (default: FAILOVER_CLUSTERS, "
        "else every context of the kubeconfig)",
    ),
]


def split_name(text: str, *, what: str = "group") -> tuple[str, str]:
    """``NAMESPACE/NAME``, or a usage error (exit 2)."""
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name or len(namespace) > 63 or len(name) > 253:
        raise fail(f"{what} {excerpt(text)}: expected NAMESPACE/NAME (at most 63 and 253 characters)", 2)
    return namespace, name


def require_known(handle: Orchestrator, key: GroupKey) -> None:
    """End the command (exit 1) when the coordination store knows nothing of the group: no owner,
    lock, history, divergence or heartbeat (a typo in its name or operatorID, or the wrong table)."""
    if not handle.knows_group(key):
        settings = handle.settings
        raise fail(
            f"group {key.namespace}/{key.name}: unknown to operatorID {key.operator_id!r} in DynamoDB table "
            f"{settings.dynamodb_table!r} (no owner, lock or history); check the name, --operator-id "
            "(FAILOVER_OPERATOR_ID) and FAILOVER_DYNAMODB_TABLE"
        )


def group_key(group: str, operator_id: str | None, settings: Settings) -> GroupKey:
    namespace, name = split_name(group)
    return GroupKey(operator_id=operator_id or settings.operator_id, namespace=namespace, name=name)


def when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# --- reading manifests and groups ------------------------------------------------------------------


# Bounds on a manifest file, checked before YAML builds anything from it: a manifest is a few KiB.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64
# Nodes once aliases are expanded (what validation and JSON encoding walk): "billion laughs" stops here.
MAX_YAML_NODES = 200_000

_COLLECTION_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def yaml_shape_problem(
    text: str, *, max_depth: int = MAX_YAML_DEPTH, max_nodes: int = MAX_YAML_NODES
) -> str | None:
    """What makes ``text`` too deep or too large to load (None: fine), from its parse events alone.

    The YAML parser is iterative; the composer and constructor that ``yaml.safe_load`` runs after it
    recurse once per level (a 10,000-deep document is a RecursionError). Aliases count as what they
    expand to, in depth and in size. Raises ``yaml.YAMLError`` for text that is not YAML.
    """
    frames: list[list[Any]] = []  # per open collection: [anchor, expanded size, height]
    anchors: dict[str, tuple[int, int]] = {}
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _COLLECTION_START):
            if len(frames) >= max_depth:
                return f"nested deeper than {max_depth} levels"
            frames.append([event.anchor, 1, 1])
            continue
        if isinstance(event, _COLLECTION_END):
            anchor, size, height = frames.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size, height = event.anchor, 1, 0
        elif isinstance(event, yaml.AliasEvent):
            anchor, (size, height) = None, anchors.get(event.anchor or "", (1, 0))
        else:
            continue
        if anchor is not None:
            anchors[anchor] = (size, height)
        if len(frames) + height > max_depth:
            return f"nested deeper than {max_depth} levels (aliases expanded)"
        if size > max_nodes or (frames and frames[-1][1] + size > max_nodes):
            return f"more than {max_nodes} values (aliases expanded)"
        if frames:
            frames[-1][1] += size
            frames[-1][2] = max(frames[-1][2], height + 1)
    return None


def _read_text(file: Path) -> str:
    """The file (``-``: stdin) as UTF-8 text of at most :data:`MAX_MANIFEST_BYTES`; one-line errors."""
    try:
        if str(file) == "-":
            stream = getattr(sys.stdin, "buffer", None)
            data = (
                stream.read(MAX_MANIFEST_BYTES + 1)
                if stream is not None
                else sys.stdin.read(MAX_MANIFEST_BYTES + 1).encode("utf-8", "surrogateescape")
            )
        else:
            with file.open("rb") as handle:
                data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise fail(f"{file}: cannot read it: {excerpt(error.strerror or str(error), quote=False)}") from error
    if len(data) > MAX_MANIFEST_BYTES:
        raise fail(f"{file}: larger than {MAX_MANIFEST_BYTES // 1024} KiB; a manifest is a few KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise fail(
            f"{file}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from error


def read_documents(file: Path) -> list[Any]:
    """The YAML documents of ``file`` (``-``: stdin), bounded in size, depth and expansion before
    they are loaded; anything wrong ends the command with one line naming the file."""
    text = _read_text(file)
    try:
        problem = yaml_shape_problem(text)
        if problem is None:
            return [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as error:
        # ValueError: a scalar YAML resolves but cannot build (a timestamp 2024-13-45, a 5,000-digit int)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise fail(f"{file}: not valid YAML: {excerpt(first, quote=False)}") from error
    raise fail(f"{file}: refused before loading it: the YAML is {problem}")


def read_manifest(file: Path) -> dict[str, Any]:
    documents = read_documents(file)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise fail(f"{file}: expected exactly one Failover object, found {len(documents)} document(s)")
    manifest: dict[str, Any] = documents[0]
    if manifest.get("kind", "Failover") != "Failover":
        raise fail(f"{file}: kind: expected Failover, got {excerpt(manifest.get('kind'))}")
    return manifest


def fetch_group(client: ClusterClient, where: str, namespace: str, name: str, label: str) -> FailoverGroup:
    shown = excerpt(f"{namespace}/{name}", quote=False)
    raw = client.find(FAILOVER_GROUPS, namespace, name)
    if raw is None:
        raise fail(f"{label}: FailoverGroup {shown} does not exist in cluster {where}")
    try:
        return FailoverGroup.model_validate(raw)
    except ValidationError as error:
        field, message = first_error(error)
        raise fail(
            f"{label}: FailoverGroup {shown} in cluster {where} is invalid: {field}: {message}"
        ) from error


def context_for(kubeconfig: Path | None, context: str | None, fallback: str | None) -> str:
    contexts = kubeconfig_contexts(kubeconfig)
    where = context or current_context(kubeconfig) or fallback
    if where is None or where not in contexts:
        raise fail(
            f"--context {excerpt(where)}: no such context in the kubeconfig ({', '.join(contexts)})", 2
        )
    return where


def read_group(
    group: str, kubeconfig: Path | None, context: str | None, fallback: str | None
) -> FailoverGroup:
    """The FailoverGroup ``group`` (NS/NAME) read from --context (else the current context, else
    ``fallback``); every problem is one line."""
    namespace, name = split_name(group)
    try:
        where = context_for(kubeconfig, context, fallback)
        client = ClusterClient.from_kubeconfig(kubeconfig, where)
        try:
            return fetch_group(client, where, namespace, name, group)
        finally:
            client.close()
    except OrchestratorError as error:
        raise fail(error.describe()) from error


def wait_run(
    handle: Orchestrator, run_id: str, timeout: float, *, records: str = "`failoverctl history`"
) -> Run:
    """Poll Redis until run ``run_id`` ends; one line when it vanishes (see ``records``) or outlasts
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        run = handle.run(run_id)
        if run is None:
            raise fail(f"run {run_id} vanished from Redis; see {records}")
        if run.terminal:
            return run
        if time.monotonic() > deadline:
            raise fail(
                f"run {run_id} still {run.state_name} after {timeout:g}s; "
                f"follow it with `failoverctl watch {run_id}`"
            )
        time.sleep(0.5)
