"""Where a weight-only pass spends its time: named phases with their wall time and arithmetic, recorded on request.

The passes mark their phases with :func:`phase`; nothing is timed (and nothing waits for the device) unless a
caller records them::

    with phases.recording() as log:
        predict_induction(source)
    log.rows()  # [(phase, seconds, flop, calls)]

A benchmark divides each phase's flop by its seconds and by the machine's measured GEMM rate, so the distance to
the limit is on every line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp


def gemm_rate(dtype: str, size: int = 1024, repeats: int = 3) -> float:
    """GFLOP/s of this backend's size x size x size matrix product with inputs in ``dtype``, accumulated in float32
    (compiled and warmed up first)."""
    a = jnp.ones((size, size), dtype)
    product = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32, precision=jax.lax.Precision.HIGHEST))
    product(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        product(a).block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


@dataclasses.dataclass
class PhaseLog:
    """Seconds, flop and calls per phase name, in the order the phases first ran."""

    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    flop: dict[str, float] = dataclasses.field(default_factory=dict)
    calls: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, name: str, seconds: float, flop: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.flop[name] = self.flop.get(name, 0.0) + flop
        self.calls[name] = self.calls.get(name, 0) + 1

    def rows(self) -> list[tuple[str, float, float, int]]:
        """[(phase, seconds, flop, calls)]."""
        return [(name, self.seconds[name], self.flop[name], self.calls[name]) for name in self.seconds]


_log: PhaseLog | None = None


@contextlib.contextmanager
def recording() -> Iterator[PhaseLog]:
    """Record every :func:`phase` run inside the block into the yielded :class:`PhaseLog`."""
    global _log
    outer, _log = _log, PhaseLog()
    try:
        yield _log
    finally:
        _log = outer


def _identity(value: Any) -> Any:
    return value


@contextlib.contextmanager
def phase(name: str, flop: float = 0.0) -> Iterator[Callable[[Any], Any]]:
    """Time the block as phase ``name`` doing ``flop`` floating-point operations. Yields ``done``: pass the block's
    device results through it (``x = done(f(...))``) so that a recorded phase waits for them; unrecorded, it is the
    identity and nothing waits."""
    if _log is None:
        yield _identity
        return
    log, start = _log, time.perf_counter()
    yield jax.block_until_ready
    log.add(name, time.perf_counter() - start, flop)
