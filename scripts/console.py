"""What the command line shows people: rich output, progress bars and readable errors."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from geodata.errors import RutasError

console = Console(stderr=True)
out = Console()

P = ParamSpec("P")
R = TypeVar("R")


def progress() -> Progress:
    """A progress bar for long work, written to stderr so ``--json`` output stays clean."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def show_error(error: RutasError) -> None:
    """Print an error and its row-level problems as a table a non-programmer can read."""
    console.print(f"[bold red]Error:[/] {error.message_es or error.message}")
    if error.message_es:
        console.print(f"[red]{error.message}[/]")
    if error.problems:
        table = Table("archivo / file", "fila / row", "campo / field", "valor / value",
                      "motivo / reason")
        for p in error.problems[:50]:
            table.add_row(p.file, "" if p.row is None else str(p.row), p.field, p.value[:40],
                          f"{p.reason_es}\n{p.reason}")
        console.print(table)
        if len(error.problems) > 50:
            console.print(f"... {len(error.problems) - 50} more")


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`RutasError` into a readable message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RutasError as error:
            show_error(error)
            raise typer.Exit(code=2) from None

    return wrapper


def print_json(payload: Any) -> None:
    """Write one JSON document on stdout (one line), for machines."""
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
