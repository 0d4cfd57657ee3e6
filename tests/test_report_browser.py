"""report.html in a real browser (headless Chromium): every teacher sample is there, and filtering
by a verdict shows exactly that verdict's samples, offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import make_run

from cotdistill.reporting.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI needs Chromium for the report's browser test: apt-get install chromium (.ci/run does)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium with no network and a throw-away profile; its stdout."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--proxy-server=127.0.0.1:9", "--virtual-time-budget=3000", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def visible_verdicts(dom: str) -> list[str]:
    """The verdict cell of each row of the annotation browser that is not hidden."""
    table = dom[dom.index('class="browser"'):]
    rows = re.findall(r'<tr data-filter="([^"]*)"( hidden="")?>', table)
    return [verdict for verdict, hidden in rows if not hidden]


def test_filtering_the_annotations_by_a_verdict_shows_only_that_verdict(tmp_path):
    _, html = write_report([make_run(tmp_path / "run")])
    everything = chromium(tmp_path, "--dump-dom", html.as_uri())
    assert sorted(visible_verdicts(everything)) == ["kept", "kept", "leak", "wrong"]
    assert "4 of 4 shown" in everything
    wrong = chromium(tmp_path, "--dump-dom", html.as_uri() + "#filter=wrong")
    assert visible_verdicts(wrong) == ["wrong"] and "1 of 4 shown" in wrong
    assert "1 + 1 = 3. The answer is 3." in wrong  # the wrong sample's CoT is on the page


def test_a_screenshot_of_the_filtered_report_can_be_taken(tmp_path):
    _, html = write_report([make_run(tmp_path / "run")])
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", html.as_uri() + "#filter=kept")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
