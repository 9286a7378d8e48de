"""A report as one self-contained HTML page: inline CSS, the timeline as inline SVG, no JavaScript.

Pure string templates; every value from a run goes through ``html.escape``. Each run gets a Gantt
chart with one lane per cluster (source, target, then DynamoDB for the coordination steps), a bar per
step (its native SVG ``<title>`` says the step's figures), the downtime window shaded red and the
objective drawn as a dashed line when it falls on the chart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from fsm.forecast import seconds_text
from fsm.report import DrillReport, RunReport, Verdict
from fsm.timeline import StepTiming

WIDTH, LABEL, ROW, TOP = 1000, 300, 22, 28
CHART = WIDTH - LABEL - 20
COLOURS = {"effect": "#3b6fd4", "wait": "#e0a23b", "coordination": "#7a7a7a"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}
.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;font-weight:bold;color:#fff}
.verdict-PASS{background:#2e8b57}.verdict-FAIL{background:#a93226}.verdict-NO_OBJECTIVE{background:#7a7a7a}
svg text{font-size:11px;font-family:system-ui,sans-serif}
section{margin-bottom:3em}
"""


def _t(value: float | None) -> str:
    return "-" if value is None else seconds_text(value)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bar(report: RunReport, step: StepTiming, y: int, scale: float, horizon: float) -> str:
    end = step.end if step.end is not None else horizon
    x = LABEL + step.start * scale
    width = max(2.0, (end - step.start) * scale)
    colour = "#c0392b" if step.errors or step.outcome not in ("done", "") else COLOURS.get(step.type, "#555")
    tip = (
        f"{step.key} on {report.lane_of(step)} ({step.stage}): {_t(step.duration)}, "
        f"attempts {step.attempts}, checks {step.checks}, errors {step.errors}, outcome {step.outcome or '-'}"
    )
    return (
        f'<rect class="bar bar-{escape(step.type)}" data-step="{escape(step.key)}" '
        f'data-lane="{escape(report.lane_of(step))}" x="{x:.1f}" y="{y + 3}" width="{width:.1f}" '
        f'height="{ROW - 6}" fill="{colour}"><title>{escape(tip)}</title></rect>'
        f'<text x="{LABEL - 6}" y="{y + ROW - 7}" text-anchor="end">{escape(step.key)}</text>'
    )


def gantt(report: RunReport) -> str:
    """The run's steps as an SVG Gantt chart, one lane per cluster."""
    horizon = max([report.rto_seconds or 0.0, *(s.end or s.start for s in report.steps), 0.001])
    objective = report.objective_seconds
    if objective is not None and objective <= horizon * 1.5:
        horizon = max(horizon, objective)
    scale = CHART / horizon
    parts: list[str] = []
    y = TOP
    for lane, steps in report.lanes():
        parts.append(f'<text class="lane" x="4" y="{y + ROW - 7}" font-weight="bold">{escape(lane)}</text>')
        y += ROW
        parts.extend(_bar(report, step, y + ROW * i, scale, horizon) for i, step in enumerate(steps))
        y += ROW * len(steps) + 6
    height = y + 10
    overlays = []
    window = report.downtime
    if window is not None:
        x, w = LABEL + window[0] * scale, max(1.0, (window[1] - window[0]) * scale)
        overlays.append(
            f'<rect class="downtime" x="{x:.1f}" y="{TOP}" width="{w:.1f}" height="{height - TOP - 10}" '
            f'fill="#c0392b" fill-opacity="0.12"><title>downtime {_t(window[1] - window[0])}</title></rect>'
        )
    if objective is not None and objective <= horizon:
        x = LABEL + objective * scale
        overlays.append(
            f'<line class="objective" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 8}" y2="{height - 10}" '
            f'stroke="#2e8b57" stroke-dasharray="4 3"><title>objective {_t(objective)}</title></line>'
        )
    ticks = []
    for i in range(6):
        t = horizon * i / 5
        x = LABEL + t * scale
        ticks.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 4}" y2="{height - 10}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{TOP - 10}" text-anchor="middle">{escape(_t(t))}</text>'
        )
    return (
        f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="timeline of run {escape(report.run_id)}">'
        f"{''.join(ticks)}{''.join(overlays)}{''.join(parts)}</svg>"
    )


LEGEND = (
    '<p class="legend">'
    + " ".join(
        f'<span style="display:inline-block;width:12px;height:12px;background:{colour}"></span> {label}'
        for colour, label in (
            (COLOURS["effect"], "effect"),
            (COLOURS["wait"], "wait"),
            (COLOURS["coordination"], "coordination"),
            ("#c0392b", "met errors or failed"),
            ("#f6e1df", "downtime window"),
        )
    )
    + " · dashed line: the objective</p>"
)


def _rows(rows: list[list[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)


def _run_section(report: RunReport) -> str:
    verdict, why = report.verdict
    messages = dict(report.messages)
    figures = [
        ["run", report.run_id],
        ["mode", report.mode + (" (drill)" if report.drill else "")],
        ["from → to", f"{report.source_cluster} → {report.target_cluster}"],
        ["outcome", report.outcome + (f": {report.message}" if report.message else "")],
        ["started", _when(report.started_at)],
        ["finished", _when(report.finished_at)],
        ["RTO (start to completion)", _t(report.rto_seconds)],
        ["objective (spec.objectives.rto)", _t(report.objective_seconds)],
        ["downtime (source stopped serving → target serves)", _t(report.downtime_seconds)],
        ["source of this report", "the run (Redis)" if report.origin == "run" else "history (DynamoDB)"],
    ]
    waits = [
        [w.key, report.lane_of(w), _t(w.duration), str(w.checks), w.outcome or "-"] for w in report.waits
    ]
    faults = [
        [f.key, report.lane_of(f), str(f.attempts), str(f.errors), f.outcome or "-", messages.get(f.key, "")]
        for f in report.faults
    ]
    return (
        f'<section class="run" data-run="{escape(report.run_id)}">'
        f"<h2>{escape(report.mode)} {escape(report.source_cluster)} → {escape(report.target_cluster)} "
        f'<span class="verdict verdict-{verdict.value}" data-verdict="{verdict.value}">'
        f"{verdict.value}</span></h2>"
        f'<p class="verdict-reason">{escape(why)}</p>'
        f"<table>{_rows(figures)}</table>"
        f"<h3>Timeline</h3>{LEGEND}{gantt(report)}"
        f"<h3>Waits</h3><table><tr><th>step</th><th>cluster</th><th>time</th><th>checks</th>"
        f"<th>outcome</th></tr>{_rows(waits)}</table>"
        f"<h3>Retries and faults</h3>"
        + (
            f"<table><tr><th>step</th><th>cluster</th><th>attempts</th><th>errors</th><th>outcome</th>"
            f"<th>last message</th></tr>{_rows(faults)}</table>"
            if faults
            else "<p>none: every step succeeded at its first attempt</p>"
        )
        + "</section>"
    )


def render(report: DrillReport) -> str:
    """The whole page."""
    verdict = report.verdict
    summary = {
        Verdict.PASS: "every run met the objective",
        Verdict.FAIL: "at least one run failed or missed the objective",
        Verdict.NO_OBJECTIVE: "every run succeeded; the group sets no objective",
    }[verdict]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(report.title)}</h1>"
        f"<p>group {escape(report.group)} · generated {_when(report.generated_at)} · verdict "
        f'<span id="verdict" class="verdict verdict-{verdict.value}" data-verdict="{verdict.value}">'
        f"{verdict.value}</span> ({escape(summary)})</p>"
        + "".join(_run_section(run) for run in report.runs)
        + "</body></html>"
    )
