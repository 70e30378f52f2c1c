"""Shared console helpers for the CLI: one stderr console, a standard progress bar, and resumable work."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["console", "err_console", "progress", "reporter", "resumable", "Interrupted"]

# soft_wrap: piped output keeps one line per message instead of wrapping at 80 columns.
# Piped, rich would draw tables 80 columns wide and cut ids: give them room.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


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


# ----- progress that also works when stderr is not a terminal -------------------------------------
@contextmanager
def reporter(description: str, total: int | None = None, *, every: float = 10.0) -> Iterator[Callable[[int, int | None], None]]:
    """Yield `update(done, total)` for long work: a rich bar on a terminal, else one line every `every` seconds.

    Schedulers and CI logs see ``classifying: 12,000/80,000 (15%), 40 s, about 3 min left``
    instead of silence. With `total` None the work is shown as a spinner
    (terminal) or elapsed time only. A ticker thread keeps the line coming
    while one long step runs (e.g. a model's fit).
    """
    import threading
    import time

    start = time.monotonic()
    state = {"done": 0, "total": total}
    if err_console.is_terminal:
        bar = progress(transient=True)
        with bar:
            task = bar.add_task(description, total=total)

            def update(done: int, new_total: int | None = None) -> None:
                bar.update(task, completed=done, total=new_total if new_total is not None else state["total"])

            yield update
        return

    stop = threading.Event()

    def line() -> str:
        done, tot = state["done"], state["total"]
        elapsed = time.monotonic() - start
        counts = f"{done:,}/{tot:,} ({done / tot:.0%}), " if tot else (f"{done:,}, " if done else "")
        text = f"{description}: {counts}{elapsed:.0f} s"
        if tot and done:
            left = elapsed * (tot - done) / done
            text += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        return text

    def tick() -> None:
        while not stop.wait(every):
            err_console.print(line(), highlight=False, markup=False)

    def update(done: int, new_total: int | None = None) -> None:
        state["done"] = done
        if new_total is not None:
            state["total"] = new_total

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield update
    finally:
        stop.set()
        if time.monotonic() - start >= every:
            err_console.print(f"{description}: finished in {time.monotonic() - start:.0f} s", highlight=False, markup=False)
