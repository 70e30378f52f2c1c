"""Shared console helpers for the CLI: one stderr console and a standard progress bar."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["console", "err_console", "progress"]

# soft_wrap: piped output keeps one line per message instead of wrapping at 80 columns.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def progress(*, transient: bool = False) -> Progress:
    """A progress bar on stderr (stdout stays clean for piped output)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )
