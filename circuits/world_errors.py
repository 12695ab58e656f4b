"""Failures of the world around the process (full disks, file-size and memory limits, odd paths) as one line that
names the cause and the fix, instead of a library's traceback."""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
import warnings

WRITE_LIMITS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file-size limit was reached",
                errno.EDQUOT: "the disk quota is exhausted"}


class WriteError(OSError):
    """Writing a result or a cache failed for want of room (a full disk, a file-size limit, a quota)."""


def storage_failure(err: BaseException) -> int | None:
    """The errno behind a failed write, also when TensorStore or Orbax reports it in their own words
    (``RESOURCE_EXHAUSTED``, ``OUT_OF_RANGE``, ``No space left``, ``File too large``), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_LIMITS:
            return err.errno
        text = str(err)
        if "No space left" in text or ("RESOURCE_EXHAUSTED" in text and "Out of memory" not in text):
            return errno.ENOSPC
        if "File too large" in text or "OUT_OF_RANGE: Error writing" in text:
            return errno.EFBIG
        err = err.__cause__ or err.__context__
    return None


def memory_failure(err: BaseException) -> bool:
    """Whether ``err`` says an allocation failed: a MemoryError, ENOMEM, or XLA's ``Out of memory``."""
    first_line = (str(err).splitlines() or [""])[0]
    return isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno == errno.ENOMEM) or "Out of memory" in first_line


def describe(err: BaseException) -> str:
    """One line for a failed write or allocation: the cause, the file, and the fix."""
    if memory_failure(err):
        return (f"not enough memory ({str(err).splitlines()[0][:160] if str(err) else 'an allocation failed'}); "
                "fix: --dtype bfloat16, a --mesh over more devices, run without --validate, or a larger memory limit")
    code = storage_failure(err)
    if isinstance(err, WriteError):
        return f"{err.strerror}; fix: free space, raise the limit (ulimit -f), or choose another directory"
    where = f" while writing {err.filename}" if isinstance(err, OSError) and err.filename else ""
    if code is not None:
        return f"{WRITE_LIMITS[code]}{where}; fix: free space, raise the limit (ulimit -f), or choose another directory"
    if isinstance(err, OSError):
        reason = err.strerror or str(err).splitlines()[0][:160]
        target = f": {err.filename}" if err.filename else ""
        fixes = {errno.ENOTDIR: "a part of the path is a file; choose a path whose parents are directories",
                 errno.EACCES: "choose a place you may write to, or fix its permissions",
                 errno.EPERM: "choose a place you may write to, or fix its permissions",
                 errno.ENOMEM: "free memory, or raise the memory limit (ulimit -v)",
                 errno.EROFS: "choose a place on a writable file system"}
        return f"{reason}{target}; fix: {fixes.get(err.errno, 'check the path, the disk and the limits of this machine')}"
    return str(err)


def quiet_libraries() -> None:
    """Silence what Orbax, absl and SciPy print on their own when a run fails (the CLI's one error line says it):
    their loggers, SciPy's constant-input warning, and the ``Event loop is closed`` error that TensorStore's
    callbacks print through ``sys.excepthook`` once a failed Orbax write has closed its event loop."""
    for name in ("absl", "orbax", "jax._src.distributed", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message=".*input array is constant.*")
    warnings.filterwarnings("ignore", message="Error (reading|writing) persistent compilation cache entry")  # JAX recompiles
    previous = sys.excepthook

    def hook(kind, value, traceback):
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(kind, value, traceback)

    sys.excepthook = hook


def check_room(directory, needed: int, largest: int, what: str) -> None:
    """Refuse before writing ``what`` (``needed`` bytes in all, files of up to ``largest`` bytes) into ``directory``
    when the disk lacks the room or the file-size limit (RLIMIT_FSIZE) is below the largest file."""
    import resource
    import shutil
    from pathlib import Path

    ancestor = Path(directory).absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    free = shutil.disk_usage(ancestor).free
    if needed > free:
        raise WriteError(errno.ENOSPC, f"no space left on {ancestor} for {what} (needs about {needed / 1e6:.0f} MB, {free / 1e6:.0f} MB free)")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and largest > limit:
        raise WriteError(errno.EFBIG, f"the file-size limit ({limit / 1e6:.1f} MB) is below the largest file of {what} "
                                      f"(about {largest / 1e6:.1f} MB)")


def raise_as_write_error(err: BaseException, what: str) -> None:
    """Re-raise a failed write of ``what`` reported in a library's words as one :class:`WriteError`; other
    failures are left to the caller."""
    code = storage_failure(err)
    if code is not None:
        raise WriteError(code, f"{WRITE_LIMITS[code]} while writing {what}") from err


RUNTIME_ADDRESS_SPACE = 512 * 2**20
"""Address space that XLA's CPU compiler and thread pools take on first use, beyond the backend's start-up
reservation (0.2 to 0.5 GB measured on CPU): counted only against an address-space limit (``ulimit -v``)."""


RUNTIME_START = 256 * 2**20
"""Address space JAX's CPU runtime takes when it starts, with malloc arenas capped (about 0.12 GB measured)."""


class NotEnoughMemoryError(MemoryError):
    """The chosen mode needs more memory than this machine, or this process's limit, has available."""


def release_freed_memory() -> None:
    """Hand the heap pages that freed buffers left behind back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). XLA's CPU buffers come from malloc, and glibc keeps the pages of freed ones in its arenas: on
    SmolLM2 each validation step left about 0.7 GB resident that the next one did not reuse, until trimmed."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def prepare_for_address_limit() -> None:
    """Under an address-space limit (``ulimit -v``), before the JAX runtime starts: let glibc keep 2 malloc arenas
    (by default up to 8 per core, each reserving 64 MB of address space, which took 0.9 GB here as the runtime's
    threads started), and refuse in one line a limit too low for the runtime to start at all (it would abort)."""
    import ctypes
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return
    try:
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
    left = limit - (_kilobytes("VmSize", "/proc/self/status") or 0)
    if left < RUNTIME_START:
        raise NotEnoughMemoryError(f"the address-space limit of {limit / 1e9:.2f} GB (ulimit -v) leaves {max(left, 0) / 1e9:.2f} GB, "
                                   f"less than JAX's CPU runtime takes to start (about {RUNTIME_START / 1e9:.2f} GB); fix: raise the limit")


def _kilobytes(field: str, path: str) -> int | None:
    try:
        with open(path) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available_memory_bytes() -> tuple[int, str]:
    """(bytes available, what bounds them): MemAvailable, or under an address-space limit (RLIMIT_AS) what the
    limit leaves once the JAX runtime has started and compiled."""
    import os
    import resource

    physical = _kilobytes("MemAvailable", "/proc/meminfo") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return physical, "available"
    import jax

    jax.devices()  # the runtime's own reservation counts against the limit
    headroom = limit - (_kilobytes("VmSize", "/proc/self/status") or 0) - RUNTIME_ADDRESS_SPACE
    if headroom < physical:
        return max(headroom, 0), f"left under the address-space limit of {limit / 1e9:.1f} GB (ulimit -v)"
    return physical, "available"


def check_fits(needed: int, mode: str, fix: str) -> None:
    """Raise :class:`NotEnoughMemoryError` naming ``mode`` and ``fix`` when ``needed`` bytes are not available."""
    available, bound = available_memory_bytes()
    if needed > available:
        raise NotEnoughMemoryError(f"{mode} needs about {needed / 1e9:.2f} GB of memory but {available / 1e9:.2f} GB is {bound}; fix: {fix}")


_terminal: int | None = None
"""A copy of the command line's stderr (see :func:`keep_terminal`), which library noise never reaches."""


def keep_terminal() -> None:
    """For a real command line: keep a copy of stderr for the command's own error line, so that after a failed
    read or write file descriptor 2 can stay silenced (late library threads print there) while the line gets out."""
    import os

    global _terminal
    if _terminal is None:
        _terminal = os.dup(2)


def report_failure(message: str) -> None:
    """Print ``error: message`` on the command line's stderr, with every later write to descriptor 2 silenced."""
    import os

    sys.stderr.flush()
    if _terminal is None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # first, so that no library thread writes after the line
    os.write(_terminal, f"error: {message}\n".encode())


def _collect_abandoned_reads() -> None:
    """Collect the coroutines a failed Orbax read leaves behind, now and without a word: their event loop is
    closed, so each would otherwise report "Exception ignored" (an unraisable exception) whenever the garbage
    collector next finds it, long after the one-line error that already said what failed."""
    import gc

    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


@contextlib.contextmanager
def library_noise_held():
    """Hold what is written to file descriptor 2 (Orbax's and TensorStore's threads print tracebacks there when a
    read or write fails) while the body runs: replayed if it succeeds, dropped if it raises, whose error then says
    what happened in one line (on a command line, descriptor 2 then stays silenced: see :func:`keep_terminal`)."""
    import os
    import tempfile

    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            _collect_abandoned_reads()
            os.dup2(os.open(os.devnull, os.O_WRONLY) if _terminal is not None else saved, 2)
            raise
        else:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
        finally:
            os.close(saved)
