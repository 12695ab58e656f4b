"""Wall time and peak resident memory of the main job, ``circuits report --validate`` on SmolLM2-135M, each run
in a fresh process: first with an empty XLA compilation cache (cold, compiling), then with the cache that run
filled.

    python benchmarks/main_job.py [--model smollm2-135m] [--runs 1]

The peak is the child process's own maximum RSS (``wait4``), the figure ``/usr/bin/time -v`` prints.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(model: str, out: Path, xla_cache: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one ``circuits report --validate`` in a fresh process."""
    command = [sys.executable, "-c", "from circuits.cli import main; main()", "report", model, "--validate", "--out", str(out)]
    environment = {**os.environ, "CIRCUITS_XLA_CACHE": str(xla_cache)}
    start = time.perf_counter()
    child = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {os.waitstatus_to_exitcode(status)}); run it by hand to see why")
    return wall, usage.ru_maxrss / 1e6  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runs", type=int, default=1, help="runs with the cache filled (after the cold one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        xla_cache = Path(scratch) / "xla"
        wall, peak = run_once(args.model, Path(scratch) / "cold", xla_cache)
        print(f"cold (empty XLA cache):  {wall:6.1f} s  peak RSS {peak:.2f} GB")
        for run in range(args.runs):
            wall, peak = run_once(args.model, Path(scratch) / f"warm{run}", xla_cache)
            print(f"XLA cache filled:        {wall:6.1f} s  peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
