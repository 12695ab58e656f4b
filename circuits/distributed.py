"""Multi-process runs through JAX's own SPMD: start-up, the one-writer rule, and ending together.

Every process runs the same program over one global mesh (``jax.make_mesh`` over ``jax.devices()``, which
spans all processes once :func:`initialize` has run); XLA's collectives (gloo on CPU) move the data. On top
of JAX this module adds only what a command needs to behave as one program:

- :func:`initialize`: ``jax.distributed.initialize`` from explicit values, the ``CIRCUITS_*`` environment
  (set by :mod:`circuits.launch`), or JAX's own cluster detection (SLURM, Open MPI, TPU pods, Kubernetes),
  with gloo collectives on CPU and bounded waits (a coordinator that never answers is one error, not a hang);
- :func:`is_writer`: process 0 alone writes results (the atomic writers in :mod:`circuits.utils` ask it);
- :func:`finish` / :func:`fail`: the end of a command. A process that fails posts its status and message in
  the coordination service's key-value store and exits; a watcher thread in every other process sees it and
  exits with the same status; on success every process waits until all have finished, so all exit with the
  highest status. A killed process is noticed by JAX's heartbeat (``heartbeat_s``) and ends the others;
- :func:`share` and :func:`sum_over_processes`: split independent work items over processes and gather.

Ground module: it imports nothing of the project, and JAX only when a run is distributed.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import sys
import threading

import numpy as np

ENVIRONMENT = {"coordinator": "CIRCUITS_COORDINATOR", "num_processes": "CIRCUITS_NUM_PROCESSES", "process_id": "CIRCUITS_PROCESS_ID"}
"""Where :func:`initialize` finds its values when none are passed (the launcher sets them)."""
LAUNCHED = "CIRCUITS_LAUNCHED"
"""Set by :mod:`circuits.launch` to a directory where a failing process leaves ``process-I`` (its exit status)
before telling the others: the launcher reports the failure once (so the other processes stay quiet), and knows
which process failed first even when that process's own exit is then cut short by the coordinator's."""
FAILED_KEY = "circuits/failed"
STATUS_KEY = "circuits/status/{process}"
DONE = "done"  # posted under FAILED_KEY once every process has finished
JOIN_MARGIN_S = 10  # JAX's join deadline is this much later than ours, so that ours (a clear error) comes first


class DistributedError(ValueError):
    """A multi-process start that cannot work (incomplete or out-of-range settings, an unreachable coordinator)."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins a run: ``coordinator`` HOST:PORT, ``num_processes`` N and ``process_id`` I (all
    three), or ``detect`` (JAX finds them in the cluster's environment); none of them: one process."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    detect: bool = False

    @classmethod
    def resolve(cls, coordinator=None, num_processes=None, process_id=None, detect: bool = False) -> "Launch":
        """Explicit values, each missing one taken from the ``CIRCUITS_*`` environment, then checked."""
        given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
        for name, value in given.items():
            if value is None and os.environ.get(ENVIRONMENT[name]):
                given[name] = os.environ[ENVIRONMENT[name]]
        for name in ("num_processes", "process_id"):
            if isinstance(given[name], str):
                if not given[name].strip().lstrip("-").isdigit():
                    raise DistributedError(f"{ENVIRONMENT[name]}={given[name]!r} is not a whole number; fix: set it to one")
                given[name] = int(given[name])
        launch = cls(**given, detect=detect)
        launch.check()
        return launch

    @property
    def distributed(self) -> bool:
        return self.detect or self.coordinator is not None

    def check(self) -> None:
        explicit = [self.coordinator, self.num_processes, self.process_id]
        if self.detect and any(value is not None for value in explicit):
            raise DistributedError("--distributed detects the coordinator, process count and id itself; fix: give either "
                                   "--distributed alone or all of --coordinator, --num-processes and --process-id")
        if self.detect:
            return
        if any(value is None for value in explicit) and any(value is not None for value in explicit):
            missing = [flag for flag, value in zip(("--coordinator", "--num-processes", "--process-id"), explicit) if value is None]
            raise DistributedError(f"a multi-process run needs all of --coordinator, --num-processes and --process-id "
                                   f"({', '.join(missing)} missing); fix: give all three, or --distributed on a cluster "
                                   "that JAX detects (SLURM, Open MPI, TPU pods, Kubernetes)")
        if self.coordinator is None:
            return
        if not re.fullmatch(r"[^\s:]+:\d{1,5}", self.coordinator):
            raise DistributedError(f"cannot read coordinator address {self.coordinator!r}; fix: write it as HOST:PORT "
                                   "(e.g. 127.0.0.1:12355), the address of process 0")
        if self.num_processes < 1:
            raise DistributedError(f"--num-processes {self.num_processes} is not a positive count; fix: give the number of processes")
        if not 0 <= self.process_id < self.num_processes:
            raise DistributedError(f"--process-id {self.process_id} is out of range for {self.num_processes} processes; "
                                   f"fix: number the processes 0 to {self.num_processes - 1}")


_state = {"client": None, "process": 0, "count": 1, "failed": False, "finished": False, "watcher": None}


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
               detect: bool = False, timeout_s: int = 60, heartbeat_s: int = 10) -> bool:
    """Join a multi-process run (see :class:`Launch`; values missing here come from the ``CIRCUITS_*``
    environment). Returns False, doing nothing, when no setting asks for more than one process. Call it before
    anything else touches JAX's devices. A run the user started with ``jax.distributed.initialize`` is joined
    as it is. ``timeout_s``: how long to wait for every process to connect (after it, the process prints one
    error line and exits with status 2); ``heartbeat_s``: after how long without a heartbeat a process counts
    as dead (and all others stop)."""
    launch = Launch.resolve(coordinator, num_processes, process_id, detect)
    if not launch.distributed and "jax" not in sys.modules:
        return False  # nothing asks for more processes, and no user call can have joined a run: JAX stays unloaded
    import jax

    if not jax.distributed.is_initialized():
        if not launch.distributed:
            return False
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        where = f"process {launch.process_id} of {launch.num_processes}" if not launch.detect else "this process"
        advice = (f"fix: start every process within {timeout_s} s of the others, with the same coordinator address "
                  "(process 0's HOST:PORT, reachable from every host) and the same process count")
        joined = threading.Event()
        threading.Thread(target=_end_unless_joined, args=(joined, timeout_s, f"error: {where} could not join the run at "
                         f"{launch.coordinator or 'the detected coordinator'} within {timeout_s} s; {advice}"),
                         name="circuits-join-deadline", daemon=True).start()
        try:
            jax.distributed.initialize(
                coordinator_address=launch.coordinator, num_processes=launch.num_processes, process_id=launch.process_id,
                initialization_timeout=timeout_s + JOIN_MARGIN_S, heartbeat_timeout_seconds=heartbeat_s,
            )
        except Exception as err:  # XLA raises its own status errors (UNAVAILABLE, INVALID_ARGUMENT, ...)
            first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise DistributedError(f"{where} could not join the run at {launch.coordinator or 'the detected coordinator'} "
                                   f"({first_line}); {advice}") from None
        finally:
            joined.set()
    from jax._src import distributed as jax_distributed  # the coordination service's key-value store has no public face

    _state.update(client=jax_distributed.global_state.client, process=jax.process_index(), count=jax.process_count())
    if _state["count"] > 1:
        _state["watcher"] = threading.Thread(target=_watch_for_failures, name="circuits-failure-watcher", daemon=True)
        _state["watcher"].start()
        atexit.register(_end_of_program)  # after jax's own exit handler is registered, so it runs first
        sys.excepthook = _uncaught
    return _state["count"] > 1


def _end_unless_joined(joined: threading.Event, timeout_s: float, message: str) -> None:
    """Daemon thread: exit with status 2 and ``message`` when the join has not finished after ``timeout_s``. JAX's
    own join deadline (``JOIN_MARGIN_S`` later) aborts the interpreter with a C++ stack trace instead of raising."""
    if not joined.wait(timeout_s):
        os.write(2, (message + "\n").encode())
        os._exit(2)


def process_index() -> int:
    return _state["process"]


def process_count() -> int:
    return _state["count"]


def is_writer() -> bool:
    """True in process 0 of a multi-process run, and always in a single process: only it writes results."""
    return _state["process"] == 0


def share(n: int) -> np.ndarray:
    """int[...]: the indices of ``n`` independent work items this process computes (round-robin over processes)."""
    return np.arange(_state["process"], n, _state["count"])


def sum_over_processes(array: np.ndarray) -> np.ndarray:
    """``array`` summed over all processes (each holding its share, zeros elsewhere); itself in one process."""
    if _state["count"] == 1:
        return array
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(array), tiled=False)).sum(axis=0).astype(array.dtype)


def fail(status: int, message: str) -> None:
    """Tell every other process that this one failed with ``status`` (its ``message`` already printed)."""
    client = _state["client"]
    if client is None or _state["count"] == 1:
        return
    _state["failed"] = True
    _leave_report(status)
    try:
        client.key_value_set(FAILED_KEY, f"{_state['process']}\t{status}\t{message}")
    except Exception:  # another process failed first: its status stands
        pass


def finish(status: int) -> int:
    """End a command in every process together: the status all of them exit with (the highest of all). After a
    failure (:func:`fail`) the process leaves at once without waiting: the others may be inside a collective."""
    client = _state["client"]
    if client is None or _state["count"] == 1:
        return status
    if status:
        fail(status, "")
        _exit_now(status)
    client.key_value_set(STATUS_KEY.format(process=_state["process"]), "0")
    for process in range(_state["count"]):
        client.blocking_key_value_get(STATUS_KEY.format(process=process), 24 * 3600 * 1000)  # a failure ends us first
    _state["finished"] = True
    try:  # wake every watcher, so that no thread is inside the coordination client when the interpreter exits
        client.key_value_set(FAILED_KEY, DONE)
    except Exception:  # another process posted it first
        pass
    _state["watcher"].join(timeout=30)
    return 0


def _end_of_program() -> None:
    """A program (a user's script) that ends without :func:`finish` still ends together with the others."""
    if not _state["finished"] and not _state["failed"]:
        finish(0)


def _uncaught(kind, value, trace) -> None:
    """An uncaught exception in one process: its traceback, then every process stops with status 1."""
    sys.__excepthook__(kind, value, trace)
    fail(1, f"{kind.__name__}: {value}")
    _exit_now(1)


def _watch_for_failures() -> None:
    """Daemon thread: when another process posts a failure, print one line (unless the launcher reports it) and exit
    with its status; when the coordinator itself stops answering, exit with status 2."""
    client = _state["client"]
    try:
        value = client.blocking_key_value_get(FAILED_KEY, 7 * 24 * 3600 * 1000)
    except Exception:
        if _state["failed"] or _state["finished"]:
            return
        _say("error: the run's coordinator (process 0) stopped answering; this process stops too")
        _exit_now(2)
    if value == DONE:
        return
    process, status, message = value.split("\t", 2)
    if int(process) == _state["process"]:
        return
    if message:
        _say(f"error: process {process} of {_state['count']} failed ({message}); this process stops too")
    _exit_now(int(status))


def _leave_report(status: int) -> None:
    """For the launcher (:data:`LAUNCHED`): this process failed on its own, with ``status``."""
    reports = os.environ.get(LAUNCHED)
    if not reports or not os.path.isdir(reports):
        return
    final = os.path.join(reports, f"process-{_state['process']}")
    with open(final + ".partial", "w", encoding="utf-8") as stream:
        stream.write(str(status))
    os.replace(final + ".partial", final)


def _say(line: str) -> None:
    if not os.environ.get(LAUNCHED):
        os.write(2, (line + "\n").encode())


def _exit_now(status: int) -> None:
    """Leave without JAX's shutdown barrier (which would wait for the processes still computing)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
