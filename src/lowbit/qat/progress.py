"""A training progress bar: step, loss, tokens/s, learning rate, ETA.

On a terminal it is a live bar on stderr; otherwise (logs, CI) one status line
roughly every 5% of the run, so long jobs still show they are alive.
"""

from __future__ import annotations

from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lowbit.utils.progress import bars_enabled, console, info


class TrainProgress:
    """Context manager; call :meth:`update` after every step."""

    def __init__(self, done: int, total: int, label: str) -> None:
        self.done, self.total, self.label = done, total, label
        self._progress: Progress | None = None
        self._task = None
        self._every = max(1, (total - done) // 20)

    def __enter__(self) -> TrainProgress:
        if bars_enabled():
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=console, transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, completed=self.done, status="")
        return self

    def update(self, step: int, loss: float, tokens_per_s: float, lr: float) -> None:
        """Record that ``step`` steps are done; the last one had ``loss`` at ``tokens_per_s``."""
        status = f"loss {loss:.4f}  {tokens_per_s:,.0f} tok/s  lr {lr:.2e}"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step, status=status)
        elif step == self.total or (step - self.done) % self._every == 0 or step == self.done + 1:
            info(f"{self.label} step {step}/{self.total}  {status}")

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(et, e, tb)
