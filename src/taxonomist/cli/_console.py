"""Shared console helpers for the CLI: one stderr console and a standard progress bar."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["console", "err_console", "progress"]

console = Console()
err_console = Console(stderr=True)


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
