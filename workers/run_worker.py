"""``python -m workers.run_worker [-A module[:attribute]] [worker options]``: Celery's ``worker`` command
without the rest of Celery's command line.

``celery -A workers.tasks worker`` first imports every command of Celery's CLI (``amqp`` and ``shell``
with their REPL: click_repl, prompt_toolkit, pygments) and every plugin registered under
``celery.commands`` (Flower, with Tornado): 12.6 MiB of resident memory in the worker's main process
that each pool process inherits, for commands a worker never runs (``tests/benchmarks/bench_rss.py``
measures it). This runs the same command object (``celery.bin.worker.worker``: same options, defaults,
``CELERY_WORKER_*`` environment variables and exit codes) on the app, ``workers.tasks`` unless ``-A``
names another, so ``python -m workers.run_worker -Q failover -c 4`` is ``celery -A workers.tasks
worker -Q failover -c 4``. ``failoverctl worker`` runs it.
"""

from __future__ import annotations

import os
import sys

from celery.app.utils import find_app
from celery.bin.base import CLIContext
from celery.bin.worker import worker

DEFAULT_APP = "workers.tasks"


def main(argv: list[str] | None = None) -> None:
    """Start the worker on ``argv`` (default: this process's arguments); exits with its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    name = DEFAULT_APP
    if args[:1] in (["-A"], ["--app"]) and len(args) > 1:
        name, args = args[1], args[2:]
    elif args and args[0].startswith("--app="):
        name, args = args[0].removeprefix("--app="), args[1:]
    app = find_app(name)
    # What Celery's umbrella command does before it runs a subcommand (celery.bin.celery.celery).
    worker.params.extend(app.user_options.get("worker", []))
    context = CLIContext(app=app, no_color=bool(os.environ.get("NO_COLOR")), workdir=None, quiet=False)
    worker.main(args=args, prog_name="celery worker", obj=context, auto_envvar_prefix="CELERY_WORKER")


if __name__ == "__main__":
    main()
