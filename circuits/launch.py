"""Try a multi-process run on one machine: ``python -m circuits.launch -n 2 --devices-per-process 2 -- COMMAND``.

Starts N copies of COMMAND (``circuits ...`` runs this interpreter's CLI; anything else, e.g. ``python
script.py``, runs as given), each told its place in the run through the ``CIRCUITS_*`` environment that
:func:`circuits.distributed.initialize` reads, with a coordinator on a free local port. JAX does the rest
(one global mesh, gloo collectives on CPU); this only starts the processes and ends them together.

Process 0's output is passed through; the others' standard output is dropped (every process prints the same
results) and their standard error is shown line by line behind ``[process I]``. When any process fails, the
others are given ``--grace`` seconds to stop (they do so themselves when the failure was reported), then
terminated; the launcher exits with the first failure's status, and names a process killed by a signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from circuits.distributed import ENVIRONMENT, LAUNCHED


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _command(words: list[str]) -> list[str]:
    return [sys.executable, "-m", "circuits.cli", *words[1:]] if words[0] == "circuits" else words


def _environment(process: int, processes: int, port: int, devices: int | None, reports: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({ENVIRONMENT["coordinator"]: f"127.0.0.1:{port}", ENVIRONMENT["num_processes"]: str(processes),
                ENVIRONMENT["process_id"]: str(process), LAUNCHED: reports})
    if devices is not None:
        flags = [flag for flag in env.get("XLA_FLAGS", "").split() if not flag.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
        env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _forward(stream, process: int) -> None:
    for line in iter(stream.readline, b""):
        sys.stderr.buffer.write(f"[process {process}] ".encode() + line)
        sys.stderr.buffer.flush()


def _status_text(process: int, status: int) -> str:
    if status < 0:
        return f"process {process} was killed by {signal.Signals(-status).name}"
    return f"process {process} exited with status {status}"


def _signal_alive(children: list[subprocess.Popen], signum: int) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signum)


def _new_failures(children: list[subprocess.Popen], seen: list[tuple[int, int]]) -> list[tuple[int, int]]:
    known = {process for process, _ in seen}
    return [(process, child.returncode) for process, child in enumerate(children)
            if child.returncode not in (None, 0) and process not in known]


def _reported(reports: Path) -> list[tuple[int, int]]:
    """(process, status) of the processes that failed on their own (see :data:`circuits.distributed.LAUNCHED`),
    the first to fail first."""
    written = sorted((path for path in reports.glob("process-*") if path.name.removeprefix("process-").isdigit()),
                     key=lambda path: path.stat().st_mtime_ns)
    return [(int(path.name.removeprefix("process-")), int(path.read_text())) for path in written]


def _cause(failures: list[tuple[int, int]], reported: list[tuple[int, int]]) -> tuple[int, int]:
    """The failure that caused the others. A process killed by a signal other than SIGABRT, that reported nothing:
    the others only lost their peer, and may have failed and reported in turn (a killed process closes its sockets
    before it can be reaped, so a peer can be seen failing first). Else the first process that reported its failure
    (its own exit may then end by SIGABRT: XLA aborts a process whose coordinator, process 0, left first). Else a
    death by signal, else the first failure seen."""
    reporters = {process for process, _ in reported}
    killed = [failure for failure in failures if failure[1] < 0 and failure[1] != -signal.SIGABRT and failure[0] not in reporters]
    return (killed or reported or [failure for failure in failures if failure[1] < 0] or failures)[0]


def launch(command: list[str], processes: int, devices: int | None = None, grace: float = 30.0, port: int | None = None) -> int:
    """Run ``command`` as ``processes`` processes of one JAX run; the run's exit status (see the module docstring)."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="circuits-launch-") as reports:
        return _run(command, processes, devices, grace, port, Path(reports))


def _run(command: list[str], processes: int, devices: int | None, grace: float, port: int, reports: Path) -> int:
    children = []
    for process in range(processes):
        quiet = process > 0
        children.append(subprocess.Popen(
            _command(command), env=_environment(process, processes, port, devices, str(reports)),
            stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE if quiet else None,
        ))
        if quiet:
            threading.Thread(target=_forward, args=(children[-1].stderr, process), daemon=True).start()
    failures: list[tuple[int, int]] = []  # (process, status) in the order seen, before the launcher signals any
    terminate_at = kill_at = None
    signalled = False
    try:
        while None in [child.poll() for child in children]:  # a list: every child is polled each round
            now = time.monotonic()
            if not signalled:
                failures += _new_failures(children, failures)
                if failures and terminate_at is None:
                    terminate_at = now + grace
            if terminate_at is not None and now > terminate_at:
                _signal_alive(children, signal.SIGTERM)
                signalled, terminate_at, kill_at = True, None, now + 5.0
            if kill_at is not None and now > kill_at:
                _signal_alive(children, signal.SIGKILL)
                kill_at = None
            time.sleep(0.1)
    except KeyboardInterrupt:
        _signal_alive(children, signal.SIGINT)
        for child in children:
            child.wait()
        return 130
    if not signalled:
        failures += _new_failures(children, failures)
    if not failures:
        return 0
    process, status = _cause(failures, _reported(reports))
    if status < 0:
        print(f"error: {_status_text(process, status)}; the other processes were stopped", file=sys.stderr)
        return 128 - status
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuits.launch", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m circuits.launch -n 2 --devices-per-process 2 -- "
                                            "circuits report demo-induction --validate --mesh data=2,model=2 --out report")
    parser.add_argument("-n", "--processes", type=int, required=True, help="how many processes to start")
    parser.add_argument("--devices-per-process", type=int, default=None,
                        help="fake CPU devices per process (XLA's host platform device count), for trying a mesh on one machine")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds the others get to stop after one fails")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run in every process")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given; put it after --")
    if args.processes < 1:
        parser.error("-n must be at least 1")
    return launch(command, args.processes, args.devices_per_process, args.grace, args.port)


if __name__ == "__main__":
    sys.exit(main())
