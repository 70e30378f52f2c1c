"""Shared console helpers for the CLI: one stderr console, a standard progress bar, and resumable work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["console", "err_console", "progress", "resumable", "Interrupted"]

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


# ----- Ctrl-C: say what was kept and how to resume ----------------------------------------------
class Interrupted(Exception):
    """Raised by `resumable` on Ctrl-C; `main` prints ``interrupted: <message>`` and exits 130.

    Not a KeyboardInterrupt on purpose: typer turns those into a silent return
    (exit status 0 with ``standalone_mode=False``), which schedulers read as success.
    """


@contextmanager
def resumable(hint: str | Callable[[], str]) -> Iterator[None]:
    """Wrap a command's long work so Ctrl-C ends it with exit status 130 and one line saying how to resume.

    `hint` is the line (or a function called at the moment of the interrupt,
    so it can count what was done), e.g.::

        done = 0
        with resumable(lambda: f"{done:,} of {total:,} records written to {out}; rerun the same command to resume"):
            for batch in batches:
                ...
                done += len(batch)

    prints ``interrupted: 1,200 of 5,000 records written to out.csv; rerun the same
    command to resume`` on stderr and exits 130. Work inside the block must be
    safe to stop anywhere (commit per batch, or one transaction), since the hint
    is printed after the exception has unwound it.
    """
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(hint() if callable(hint) else hint) from None
