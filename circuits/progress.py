"""Progress bars for long work (rich), quiet when the caller asks."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def progress(items: Iterable[T], description: str, *, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr (none when ``enabled`` is False)."""
    if not enabled:
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        yield from bar.track(items, total=total, description=description)


@contextlib.contextmanager
def step_progress(description: str, total: int, completed: int = 0, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A progress bar over training steps that shows the latest loss and accuracy.

    Yields ``update(step, loss=..., accuracy=...)``; a no-op when ``enabled`` is False.
    """
    if not enabled:
        yield lambda step, **fields: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  accuracy {task.fields[accuracy]:.3f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=completed, loss=float("nan"), accuracy=float("nan"))
        yield lambda step, **fields: bar.update(task, completed=step, **fields)
