"""Wall-clock timing shared by the benchmark scripts (device work is synchronised)."""
from __future__ import annotations

import time
from typing import Any, Callable


def timed(be: Any, fn: Callable[[], Any], n: int, warmup: int = 3) -> list[float]:
    """Seconds of each of ``n`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    be.synchronize()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        be.synchronize()
        out.append(time.perf_counter() - t)
    return out
