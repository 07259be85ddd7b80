"""Row blocks run on the CPU's cores (numpy) or as one block (cupy).

numpy's elementwise functions (exp, multiply, ...) run on one core, while BLAS uses all of
them. The hot elementwise passes of a step (the prior's basis functions, Adam) are
therefore split along their leading axis into one block per core and run in a thread pool:
numpy releases the GIL inside ufuncs on large arrays, so the blocks really run at once.
On the GPU the whole array is one block, since the device is parallel already.

Block boundaries depend only on the number of threads, and callers combine per-block
partial sums in block order, so a run is reproducible on a given machine. The number of
threads is the CPUs this process may use, or ``KAEM_THREADS`` when set (1 turns it off).

OpenBLAS's own worker threads spin (yielding) for about 2^28 cycles after every product, so
a row block that follows a matrix product shares its core with a spinning BLAS thread:
``cli.py`` (and ``bench/targets.py``) set ``OPENBLAS_THREAD_TIMEOUT=4`` before numpy loads
OpenBLAS, which makes them sleep at once (measured: the prior's sampler pass right after the
likelihood's products 10 → 6.5 ms median, a thermo iteration 7–10% faster). Programs that
import kaem themselves can set it in their environment.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import numpy as np

T = TypeVar("T")

_pool: list = [None, 0]  # (executor, its size), built on first use


def cpu_threads() -> int:
    """Worker threads for numpy row blocks: ``KAEM_THREADS`` if set, else the usable CPUs."""
    env = os.environ.get("KAEM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"KAEM_THREADS={env!r} is not a whole number; use e.g. 1 or 2") from None
        if n < 1:
            raise ValueError(f"KAEM_THREADS={n} must be at least 1")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def row_blocks(xp: Any, n: int, min_rows: int = 1) -> list[tuple[int, int]]:
    """Split rows 0..n into contiguous (start, stop) blocks: one per CPU thread (numpy, with at
    least ``min_rows`` rows each) or a single block (cupy)."""
    k = 1 if xp is not np else max(1, min(cpu_threads(), n // max(1, min_rows)))
    edges = [n * j // k for j in range(k + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a] or [(0, n)]


def map_blocks(fn: Callable[[int, int], T], blocks: list[tuple[int, int]]) -> list[T]:
    """[fn(start, stop) for each block], the blocks run in parallel threads when there are
    several. fn must write only to its own rows (or return partial results)."""
    if len(blocks) == 1:
        return [fn(*blocks[0])]
    if _pool[0] is None or _pool[1] < len(blocks):
        _pool[0], _pool[1] = ThreadPoolExecutor(len(blocks), thread_name_prefix="kaem"), len(blocks)
    return list(_pool[0].map(lambda b: fn(*b), blocks))
