"""A long fuzzing campaign of the checkpoint readers (the suite's tests/convert/test_fuzz.py, more examples,
random seeds), in a child process limited to 4 GB of address space so a runaway allocation fails loudly.

    python scripts/fuzz.py [EXAMPLES_PER_TARGET]     # default 20000 (about 10 minutes on 2 CPU cores)
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 4 * 2**30


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def main() -> int:
    examples = sys.argv[1] if len(sys.argv) > 1 else "20000"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "CIRCUITS_FUZZ_EXAMPLES": examples}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/convert/test_fuzz.py", "--hypothesis-show-statistics"]
    return subprocess.run(command, cwd=root, env=env, preexec_fn=limit_memory).returncode


if __name__ == "__main__":
    sys.exit(main())
