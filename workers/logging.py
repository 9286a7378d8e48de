"""Logging, configured once per process: structlog for our events, the stdlib loggers routed through it.

JSON lines in production (``FAILOVER_LOG_JSON=true``), a readable console format locally. Celery,
kombu, kubernetes and botocore log through the stdlib; their records get the same processors and
renderer, so one line format reaches the log collector. ``run_id`` and ``task_id`` come from
contextvars bound by the Celery signal hooks in ``workers.tasks``. Never log secrets or tokens.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(
    *, json: bool = False, level: str = "INFO", force: bool = False, provisional: bool = False
) -> None:
    """Configure structlog and the stdlib loggers once per process (``force``: again).

    ``provisional``: a configuration that the next call replaces (``failoverctl`` silences the logs of
    its one-shot commands, whose errors are one line of their own, until a long-running command such
    as ``watcher`` configures the real one).
    """
    global _configured  # noqa: PLW0603 - configured once per process, on purpose
    if _configured and not force:
        return
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        # A provisional configuration is replaced later: loggers used meanwhile must not keep it.
        cache_logger_on_first_use=not provisional,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # transitions logs two INFO lines per state change, and Celery two per message (received,
    # succeeded): the engine logs each decision once (``run.decided``) instead. At a site's worth of
    # messages the four cost more of a worker's CPU than the decision itself (issue 15); they are
    # there at DEBUG.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for noisy in ("celery.app.trace", "celery.worker.strategy", "transitions"):
        logging.getLogger(noisy).setLevel(quiet)
    for noisy in ("botocore", "urllib3", "kubernetes.client.rest"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a Python warning is a log line in the same format, not raw text
    _configured = not provisional
