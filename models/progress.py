"""The progress bar of every training loop: it moves once per batch and shows an ETA.

The bar counts batches (epochs x batches per epoch), so a long epoch is never a frozen screen and
the time left is estimated from the batches done. An early stop completes the bar at once.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingBar:
    """``with TrainingBar(...) as bar``: ``bar.batch()`` after each optimiser step, ``bar.epoch(i, info)``
    after each epoch's validation, ``bar.stop()`` on an early stop."""

    def __init__(self, description: str, epochs: int, batches_per_epoch: int, *, enabled: bool,
                 console: Console | None = None) -> None:
        self.epochs = epochs
        self.total = max(1, epochs * batches_per_epoch)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("batches"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console or Console(stderr=True), disable=not enabled)
        self._task = self._progress.add_task(description, total=self.total, info="")

    def __enter__(self) -> TrainingBar:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    @property
    def done(self) -> int:
        """Batches counted so far (the bar's position)."""
        return int(self._progress.tasks[0].completed)

    def batch(self) -> None:
        self._progress.advance(self._task)

    def epoch(self, epoch: int, info: str) -> None:
        self._progress.update(self._task, info=f"epoch {epoch}/{self.epochs}  {info}")

    def stop(self) -> None:
        """An early stop: the bar ends full (the batches left are not run)."""
        self._progress.update(self._task, completed=self.total)
