"""Rich progress bars for long work (ETA and a status text such as the current losses)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_live: list[Progress] = []  # the bar on screen: a bar opened inside it (a tune trial) becomes its second line


class _Bar:
    def __init__(self, progress: Progress | None, task):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, status: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, status=status)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True):
    if not enabled:
        yield _Bar(None, None)
        return
    if _live:
        task = _live[-1].add_task(description, total=total, status="")
        try:
            yield _Bar(_live[-1], task)
        finally:
            _live[-1].remove_task(task)
        return
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        TextColumn("{task.fields[status]}"), console=console, transient=False)
    with progress:
        _live.append(progress)
        try:
            yield _Bar(progress, progress.add_task(description, total=total, status=""))
        finally:
            _live.pop()
