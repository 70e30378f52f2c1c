"""The `taxonomist` command line: one module per command family, each with `register(app)`."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

import typer

from ..errors import TaxonomistError

__all__ = ["build_app", "main"]

# Each module defines `register(app: typer.Typer) -> None`. Order is the order in --help.
COMMAND_MODULES = ("taxonomy", "records", "data", "engines", "models", "llm", "compare", "audit", "serve", "keys")


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="taxonomist",
        help="Sort free-text records into your own taxonomy, and measure whether prompting or fine-tuning pays.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # that command family is not built yet
            raise
        module.register(app)
    return app


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's stop, `kill`, a CI timeout) ends a command the way Ctrl-C does: exit 130 and how to resume."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line (no traceback) and exit 1; Ctrl-C or SIGTERM exits 130."""
    # Weights come from installed packages; never reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)  # `serve` replaces it with uvicorn's own graceful shutdown
    try:
        app = build_app()
        status = app(args=argv, standalone_mode=False)
    except TaxonomistError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except KeyboardInterrupt:  # e.g. while the commands load
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # usage errors come through here with standalone_mode=False
        from ._console import Interrupted  # loaded by then: only a command that imported it raises it

        if isinstance(exc, Interrupted):  # Ctrl-C inside `resumable`: what was kept and how to resume
            typer.secho(f"interrupted: {exc}", err=True)
            sys.exit(130)
        exits, usage, aborts = _click_exceptions()
        if isinstance(exc, exits):
            sys.exit(exc.exit_code)
        if isinstance(exc, usage):  # a bad option or value: click's own message and exit status 2
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, aborts):
            typer.secho("aborted", err=True)
            sys.exit(1)
        raise
    # Without standalone mode typer *returns* the status of `typer.Exit(n)`, and turns Ctrl-C
    # outside `resumable` into a returned 130: both used to end in exit status 0.
    if isinstance(status, int) and not isinstance(status, bool) and status != 0:
        if status == 130:
            typer.secho("interrupted", err=True)
        sys.exit(status)


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(exit, usage error, abort) exception classes of click and of the click copy newer typer vendors.

    typer >= 0.2x parses options with its own `typer._click`, whose exceptions are not
    click's: checking only click's let every usage error end in a traceback.
    """
    found: dict[str, list[type]] = {"Exit": [typer.Exit], "ClickException": [], "Abort": [typer.Abort]}
    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, classes in found.items():
            if hasattr(module, attr):
                classes.append(getattr(module, attr))
    return tuple(found["Exit"]), tuple(found["ClickException"]), tuple(found["Abort"])
