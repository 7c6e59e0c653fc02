"""Progress bars for every long step, on stderr, with rate and ETA."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

#: All human-facing chatter goes to stderr so stdout stays parseable.
console = Console(stderr=True, highlight=False)

_quiet = False


def stdout_console() -> Console:
    """Console for results on stdout; piped output gets a wide fixed width so rows stay whole."""
    return Console(width=None if sys.stdout.isatty() else 220, highlight=False)


def set_quiet(quiet: bool) -> None:
    """Silence progress bars (tests, ``--quiet``)."""
    global _quiet
    _quiet = quiet


def bars_enabled() -> bool:
    """Whether live progress bars are drawn (stderr is a terminal and not ``--quiet``)."""
    return not _quiet and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar showing count, elapsed time and ETA."""
    if not bars_enabled():
        yield from items
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield from progress.track(items, total=total, description=description)


def info(message: str) -> None:
    """One line of status for the user, on stderr."""
    if not _quiet:
        console.print(message)


def warn(message: str) -> None:
    """A warning the user must see even when progress is quiet."""
    console.print(f"[yellow]warning:[/yellow] {message}")
