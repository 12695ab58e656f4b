"""Ground-level utilities any layer may use: progress bars (rich, imported on first use) and all-or-nothing file writes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from circuits.distributed import is_writer

T = TypeVar("T")


_SHOWN: list = []
"""The progress display on screen, if any: loops inside a step add their bars to it, beneath the step's."""


def progress(items: Iterable[T], description: str, *, total: int | None = None, enabled: bool = True,
             names: Callable[[T], str] | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr (none when ``enabled`` is False).

    ``names``: each item's step name. The bar then reads ``description: <step>`` while that step runs and shows
    no ETA of its own (steps differ in cost); a loop inside a step (a sweep, say) adds its own bar beneath it,
    whose ETA comes from that loop alone, and removes it when done.
    """
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    items = list(items) if total is None else items
    nested = bool(_SHOWN)
    if not nested:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), _step_eta_column())
        _SHOWN.append(Progress(*columns, transient=False, console=Console(stderr=True)))
        _SHOWN[0].start()
    bar = _SHOWN[0]
    task = bar.add_task(f"  {description}" if nested else description, total=total if total is not None else len(items),
                        eta=names is None)
    try:
        for item in items:
            if names is not None:
                bar.update(task, description=f"{description}: {names(item)}")
            yield item
            bar.advance(task)
        if names is not None:
            bar.update(task, description=f"{description}: done")
    finally:
        if nested:
            bar.remove_task(task)
        else:
            bar.stop()
            _SHOWN.clear()


def _step_eta_column():
    """rich's remaining-time column, blank for a bar over named steps of unequal cost."""
    from rich.progress import TimeRemainingColumn
    from rich.text import Text

    class StepETA(TimeRemainingColumn):
        def render(self, task):
            return Text("ETA ") + super().render(task) if task.fields.get("eta", True) else Text("")

    return StepETA()


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _honour_umask(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open`` / ``mkdir`` would (temporary files start private)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(target: str | Path) -> None:
    """Clean up what killed runs left beside ``target``, for processes that are gone (a running process's
    entries are left alone): ``.NAME.partial-PID*`` (unfinished new versions) are deleted; a ``.NAME.old-PID``
    (the previous version, moved aside for a swap) is put back if ``target`` is missing, else deleted."""
    target = Path(target).absolute()
    if not target.parent.is_dir():
        return
    for entry in sorted(target.parent.glob(f".{target.name}.*")):
        kind, _, rest = entry.name[len(target.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("partial", "old") or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if kind == "old" and not target.exists():
            os.replace(entry, target)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def remove_written_tree(path: str | Path, settle_s: float = 0.5, timeout_s: float = 10.0) -> None:
    """Delete ``path``, a directory a library's background writers may still be filling after a failed write
    (TensorStore creates missing parent directories as it goes): removed again until it stays gone for
    ``settle_s`` seconds, for at most ``timeout_s``. A path that is already gone returns at once."""
    import time

    path = Path(path)
    deadline = time.monotonic() + timeout_s
    while path.exists() and time.monotonic() < deadline:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle_s)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename: never half-written.
    In a multi-process run only process 0 writes (:func:`circuits.distributed.is_writer`)."""
    path = Path(path)
    if not is_writer():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.partial-{os.getpid()}-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        _honour_umask(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class OutputError(ValueError):
    """An output directory that cannot take a result (it holds other files)."""


def _writable_ancestor(path: Path) -> Path:
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    return ancestor


def check_output_file(path: str | Path) -> None:
    """Refuse, before any work, an output file that cannot be written (a directory there, a read-only place)."""
    path = Path(path).absolute()
    if path.is_dir():
        raise OutputError(f"{path} is a directory; fix: give a file name such as {path / 'result.json'}")
    ancestor = _writable_ancestor(path)
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {ancestor} is not a writable directory; fix: choose another place")


def check_output_directory(directory: str | Path, names: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output directory that :func:`write_files` would refuse."""
    directory = Path(directory).absolute()
    if directory.exists():
        if not directory.is_dir():
            raise OutputError(f"{directory} is a file, not a directory; fix: choose a new or empty directory for --out")
        foreign = sorted(entry.name for entry in directory.iterdir() if entry.name not in names + keep)
        if foreign:
            listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputError(f"{directory} already holds other files ({listed}); fix: choose a new or empty directory for --out")
    check_output_file(directory / names[0])


def write_files(directory: str | Path, files: dict[str, str | bytes], keep: tuple[str, ...] = ()) -> Path:
    """Write ``files`` {name: text or bytes} as ``directory``, all or nothing.

    The set is written into a staging directory beside it, then swapped in as a whole: an existing
    ``directory`` that holds only files of this set is renamed aside, the staging directory renamed
    into place, and the old one deleted. An interrupt leaves either the old set or the new one.
    A directory holding anything else is refused (:class:`OutputError`), never emptied, except the
    entries named in ``keep`` (e.g. training checkpoints): when one is present, the files are
    renamed into place one by one instead, and the kept entries are left alone. In a multi-process run only
    process 0 writes.
    """
    directory = Path(directory).absolute()
    if not is_writer():
        return directory
    check_output_directory(directory, tuple(files), keep)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(directory)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.partial-{os.getpid()}-"))
    retired = directory.parent / f".{directory.name}.old-{os.getpid()}"
    try:
        for name, content in files.items():
            target = staging / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
            _honour_umask(target)
        _honour_umask(staging, directory=True)
        if any((directory / name).exists() for name in keep):
            for name in files:
                os.replace(staging / name, directory / name)
        else:
            swap_in(staging, directory, retired)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def swap_in(new: Path, target: Path, aside: Path) -> None:
    """Replace ``target`` by the directory ``new`` as a whole: the old one is renamed to ``aside``, ``new`` renamed
    into place, then the old one deleted. If the second rename fails or is interrupted, the old one is put back."""
    moved_aside = False
    try:
        if target.exists():
            os.replace(target, aside)
            moved_aside = True
        os.replace(new, target)
        moved_aside = False
    finally:
        if moved_aside:
            os.replace(aside, target)
        shutil.rmtree(aside, ignore_errors=True)


def head_label(layer: int, head: int) -> str:
    """The name of a head in every table, figure and message: ``L17H5``."""
    return f"L{layer}H{head}"


def rounded_list(array: np.ndarray) -> list:
    """A float array as nested lists rounded to 6 decimals, NaN and infinities as None (strict JSON)."""
    array = np.asarray(array, np.float64)
    rounded = np.round(np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0), 6)
    return np.where(np.isfinite(array), rounded, None).tolist()


def json_text(data: dict) -> str:
    """Strict JSON (no NaN tokens: an undefined number, such as the correlation of constant scores, is null;
    numpy scalars as numbers), indented."""

    def finite(value):
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        if isinstance(value, (float, np.floating)):
            return float(value) if np.isfinite(value) else None
        return value

    def default(value):
        if isinstance(value, (np.floating, np.integer, np.bool_)):
            return finite(value.item())
        if isinstance(value, np.ndarray):
            return rounded_list(value)
        raise TypeError(f"cannot write {type(value).__name__} as JSON")

    return json.dumps(finite(data), indent=1, allow_nan=False, default=default)


class ResultFiles:
    """What every experiment result shares: the names it writes (``FILES``; ``KEEP``: other entries its
    directory may hold, left alone), ``files()`` {name: text or bytes} (each JSON with a ``schema_version``)
    and ``write(directory)`` through the one atomic writer."""

    FILES: tuple[str, ...] = ()
    KEEP: tuple[str, ...] = ()

    def files(self) -> dict[str, str | bytes]:
        raise NotImplementedError

    def write(self, directory: str | Path) -> Path:
        """Write :meth:`files` into ``directory``, all or nothing; returns the directory."""
        return write_files(directory, self.files(), keep=self.KEEP)

    @classmethod
    def check_output(cls, directory: str | Path) -> None:
        """Refuse, before any work, a ``directory`` that :meth:`write` would refuse."""
        check_output_directory(directory, cls.FILES, cls.KEEP)

    @classmethod
    def written(cls, directory: str | Path) -> str:
        """The paths :meth:`write` wrote into ``directory``, for messages."""
        return ", ".join(str(Path(directory) / name) for name in cls.FILES)
