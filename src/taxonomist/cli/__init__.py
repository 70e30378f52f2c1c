"""The `taxonomist` command line: one module per command family, each with `register(app)`."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from ..errors import TaxonomistError

__all__ = ["build_app", "main"]

# Each module defines `register(app: typer.Typer) -> None`. Order is the order in --help.
COMMAND_MODULES = ("taxonomy", "records", "data", "engines", "llm", "compare")


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


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line (no traceback) and exit 1."""
    # Weights come from installed packages; never reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    app = build_app()
    try:
        app(args=argv, standalone_mode=False)
    except TaxonomistError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors come through here with standalone_mode=False
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            typer.secho("aborted", err=True)
            sys.exit(1)
        raise
