"""The report page in a real browser: headless Chromium parses it, the Gantt chart's bars (one per step,
in its cluster's lane), the downtime window and the verdict are in its DOM, and its screenshot shows
the verdict's and the bars' colours (so the page is not blank)."""

from __future__ import annotations

from pathlib import Path

from fsm.plan import Step
from fsm.report import drill_report, report_from_run
from producers.report_page import COLOURS, render
from tests.chromium import Elements, dump_dom, pixels, screenshot
from tests.unit.test_forecast_and_report import T0, finished_run

GREEN, FAIL_RED = (0x2E, 0x8B, 0x57), (0xA9, 0x32, 0x26)  # the PASS and FAIL badges


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_chromium_shows_the_bars_and_the_verdict(tmp_path: Path) -> None:
    forward = report_from_run(finished_run(step_seconds=0.5), objective=30.0)
    back = report_from_run(finished_run("UPTIME", step_seconds=0.5), objective=30.0)
    page = tmp_path / "report.html"
    page.write_text(
        render(drill_report("Drill of shop/shop <script>", "shop/shop", [forward, back], 30.0, T0))
    )

    dom = Elements(dump_dom(page, tmp_path / "profile"))
    assert not [a for t, a in dom.tags if t == "script"]  # no JavaScript, and the title is escaped
    assert dom.text_by_id["verdict"].strip() == "PASS"
    bars = dom.find("rect", "bar")
    assert len(bars) == len(forward.steps) + len(back.steps)
    lanes = {(b["data-step"], b["data-lane"]) for b in bars}
    assert ("disable_network", "site-a") in lanes and ("enable_network", "site-b") in lanes
    assert ("complete", "DynamoDB (coordination)") in lanes
    assert all(float(b["width"]) > 0 for b in bars)
    assert len(dom.find("rect", "downtime")) == 2  # one window per run (UPTIME's is empty but drawn)
    assert [a["data-verdict"] for a in dom.find("span", "verdict")] == ["PASS", "PASS", "PASS"]

    colours = pixels(screenshot(page, tmp_path / "profile", tmp_path / "shot.png", (1050, 900)))
    assert GREEN in colours  # the PASS badge
    assert _rgb(COLOURS["effect"]) in colours and _rgb(COLOURS["coordination"]) in colours  # the bars


def test_a_failed_run_is_shown_failed_with_its_fault(tmp_path: Path) -> None:
    failed = report_from_run(finished_run(fail_at=Step.WAIT_READY), objective=30.0)
    page = tmp_path / "report.html"
    page.write_text(render(drill_report("Drill", "shop/shop", [failed], 30.0, T0)))
    dom = Elements(dump_dom(page, tmp_path / "profile"))
    assert dom.text_by_id["verdict"].strip() == "FAIL"
    assert not dom.find("rect", "downtime")  # a failed run's target never served
    failed_bars = [b for b in dom.find("rect", "bar") if b["fill"] == "#c0392b"]
    assert [b["data-step"] for b in failed_bars] == ["wait_ready"]
    colours = pixels(screenshot(page, tmp_path / "profile", tmp_path / "shot.png", (1050, 600)))
    assert FAIL_RED in colours and GREEN not in colours
