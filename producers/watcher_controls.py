"""The watcher's part of operator controls: the control annotations of a Failover (see
:mod:`fsm.control_annotations`) turned into the same requests ``failoverctl run ...`` makes, through
:meth:`workers.api.Orchestrator.control`, with refusals recorded in the run (so the Failover's
``OperatorControl`` condition says why, and the annotation is not tried again). Called on every
reconcile of a Failover that is not finished (each watch event and each status pass)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from fsm.control_annotations import SOURCE, requested_by, wanted_controls
from workers.api import Asked, Orchestrator

log = structlog.get_logger(__name__)


def apply_annotation_controls(
    orchestrator: Orchestrator, obj: Mapping[str, Any], *, warn_once: Callable[[str], None]
) -> list[str]:
    """Ask for what the annotations of ``obj`` want of its runs; returns one line per request made.
    ``warn_once`` reports an annotation that names no step (logged once per value by the caller)."""
    meta = obj.get("metadata") or {}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    name = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    done = []
    for run in orchestrator.runs(failover=name):
        for wanted in wanted_controls(annotations, run):
            if wanted.unknown is not None:
                warn_once(f"skip-step annotation names no step: {wanted.unknown!r}")
                continue
            asked = Asked(
                wanted.action,
                requested_by(obj),
                wanted.why,
                step=wanted.step,
                force=wanted.force,
                source=SOURCE,
            )
            result = orchestrator.control(run.run_id, asked, record_refusal=True)
            line = f"run {run.run_id}: {wanted.action.value} by {asked.who}: " + (
                f"refused: {result.refused}" if result.refused else "requested"
            )
            log.info("failover_control_annotation", failover=name, detail=line)
            done.append(line)
    return done
