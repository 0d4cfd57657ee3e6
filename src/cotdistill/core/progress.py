"""The progress of the long stages (teacher samples, evaluations, training), on stderr so that
stdout stays clean for results: a bar in a terminal; in a log file (not a terminal), where a bar
would be raw control characters, one plain line now and then in the same format for every stage:

    annotate: 12/40, 3.1/min, ETA 9 min

Also the CLI's consoles: rich tables keep a readable minimum width on narrow terminals.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

MIN_WIDTH = 80  # columns a console lays tables out in, at least (the classic terminal)
LOG_EVERY_S = 10.0  # seconds between two progress lines of a task in a log file
# The window rates and ETAs are measured over. rich's default (30 s) is shorter than one batch of a
# slow teacher, whose answers arrive together: the rate then read "–/min" between batches.
RATE_WINDOW_S = 600.0


def readable_console(**options: Any) -> Console:
    """A rich Console no narrower than MIN_WIDTH: on a narrower terminal (COLUMNS=5) rich would cut
    every table cell to '…'; lines wider than the terminal wrap there and stay readable. In a log
    file (not a terminal) a message stays on one line, where rich would break it at 80 columns."""
    console = Console(**options)
    if console.width < MIN_WIDTH:
        console.width = MIN_WIDTH
    if not console.is_terminal:
        console.soft_wrap = True
    return console


console = readable_console(stderr=True)


class RateColumn(ProgressColumn):
    """Items (teacher samples, questions) per minute: rich's own speed column shows per second."""

    def render(self, task) -> Text:
        return Text(f"{task.speed * 60:.1f}/min" if task.speed else "–/min", style="cyan")


def progress_line(task: Task) -> str:
    """A task's progress as one plain line: 'annotate: 12/40, 3.1/min, ETA 9 min'."""
    rate = f"{task.speed * 60:.1f}/min" if task.speed else "–/min"
    eta = task.time_remaining
    eta_text = f"{math.ceil(eta / 60)} min" if eta is not None and math.isfinite(eta) else "–"
    total = f"{task.total:.0f}" if task.total is not None else "?"
    return f"{task.description}: {task.completed:.0f}/{total}, {rate}, ETA {eta_text}"


class LogProgress(Progress):
    """A Progress for a log file: no bar; a progress_line when a task moves, at most every
    LOG_EVERY_S seconds, and when it finishes."""

    def __init__(self) -> None:
        super().__init__(console=console, disable=True, speed_estimate_period=RATE_WINDOW_S)
        self._logged: dict[TaskID, float] = {}  # when each task's last line was written; inf: its last line

    def update(self, task_id: TaskID, **changes: Any) -> None:
        super().update(task_id, **changes)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        task, now, last = self._tasks[task_id], time.monotonic(), self._logged.get(task_id, -math.inf)
        if last == math.inf or not (task.finished or now - last >= LOG_EVERY_S):
            return
        self._logged[task_id] = math.inf if task.finished else now
        console.print(progress_line(task), markup=False, highlight=False, soft_wrap=True)


def progress_bar(quiet: bool) -> Progress:
    """The stages' progress display: a bar on a terminal, lines in a log file, nothing when quiet."""
    if not quiet and not console.is_terminal:
        return LogProgress()
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=quiet, speed_estimate_period=RATE_WINDOW_S,
    )
