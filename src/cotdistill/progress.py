"""The progress bar of the long stages (teacher samples, evaluations), on stderr so that stdout
stays clean for results; in a log file (not a terminal) stages print a line per batch instead."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items (teacher samples, questions) per minute: rich's own speed column shows per second."""

    def render(self, task) -> Text:
        return Text(f"{task.speed * 60:.1f}/min" if task.speed else "–/min", style="cyan")


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=quiet,
    )
