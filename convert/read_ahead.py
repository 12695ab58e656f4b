"""Reading ahead in memory-mapped weights: a streaming pass asks the OS for the next layer's bytes while it computes
this one, so that reading overlaps computing instead of adding to it (on a model larger than the page cache, the
page faults of a cold read otherwise stall the products)."""

from __future__ import annotations

import mmap


def read_ahead(mapping: mmap.mmap, begin: int, end: int) -> None:
    """Ask the OS to read bytes [begin, end) of ``mapping`` into the page cache in the background (``MADV_WILLNEED``):
    nothing is mapped into this process or copied, and a platform without the advice reads on demand as before."""
    advice = getattr(mmap, "MADV_WILLNEED", None)
    if advice is None or end <= begin:
        return
    start = begin - begin % mmap.PAGESIZE
    mapping.madvise(advice, start, min(end, len(mapping)) - start)
