"""Ground-level utilities any layer may use: progress bars (rich, imported on first use) and all-or-nothing file writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")


def progress(items: Iterable[T], description: str, *, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr (none when ``enabled`` is False)."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_files(directory: str | Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` {name: text or bytes} into ``directory``, all or nothing: rendered into a staging
    directory beside it first, then moved into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.partial-"))
    try:
        for name, content in files.items():
            if isinstance(content, bytes):
                (staging / name).write_bytes(content)
            else:
                (staging / name).write_text(content, encoding="utf-8")
        if not directory.exists():
            os.replace(staging, directory)
            return directory
        for name in files:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def rounded_list(array: np.ndarray) -> list:
    """A float array as nested lists, NaN as 0, rounded to 6 decimals (JSON-ready)."""
    return np.round(np.nan_to_num(np.asarray(array, np.float64), nan=0.0), 6).tolist()
