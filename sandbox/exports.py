"""What `failoverctl sandbox up` tells a shell: the environment of a watcher, a worker and
``failoverctl`` against the running sandbox, as ``export`` lines a POSIX shell can ``source``.

Values are shell-quoted (:func:`shlex.quote`: JSON lists and URLs survive), one export per line, and
the file is written whole or not at all (written beside its path, then renamed), so a script that
waits for it never reads half of it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

# Each component's own kubeconfig (deploy/rbac identities), exported beside FAILOVER_KUBECONFIG.
COMPONENT_VARIABLES = {
    "worker": "SANDBOX_WORKER_KUBECONFIG",
    "watcher": "SANDBOX_WATCHER_KUBECONFIG",
    "health-checker": "SANDBOX_HEALTH_CHECKER_KUBECONFIG",
}


def sandbox_exports(
    env: Mapping[str, str], *, kubeconfig: Path, operator_kubeconfig: Path, components: Mapping[str, Path]
) -> dict[str, str]:
    """The variables to export: the stack's settings and AWS dummy credentials (``env``), ``KUBECONFIG``
    for kubectl (both sandbox contexts), ``FAILOVER_KUBECONFIG`` for ``failoverctl`` acting as an
    operator, and ``SANDBOX_<COMPONENT>_KUBECONFIG`` for the components' own identities."""
    exports = {**env, "KUBECONFIG": str(kubeconfig), "FAILOVER_KUBECONFIG": str(operator_kubeconfig)}
    for component, path in components.items():
        exports[COMPONENT_VARIABLES[component]] = str(path)
    return dict(sorted(exports.items()))


def export_lines(exports: Mapping[str, str]) -> list[str]:
    """``export NAME=VALUE`` per variable, each value quoted for a POSIX shell."""
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


def write_env_file(path: Path, exports: Mapping[str, str], header: str = "") -> None:
    """Write the exports to ``path`` (mode 0600: it holds the run key) in one rename."""
    path = path.expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + "\n".join(export_lines(exports)) + "\n"
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    partial.replace(path)
