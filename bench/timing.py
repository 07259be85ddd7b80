"""Wall-clock timing shared by the benchmark scripts (device work is synchronised)."""
from __future__ import annotations

import argparse
import statistics
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


def interleaved_medians(be: Any, jobs: dict, reps: int, warmup: int = 3) -> dict:
    """Median seconds of each zero-argument callable in ``jobs``. Repetitions are
    interleaved round-robin over the jobs, so background load on shared cores affects all
    of them alike and the ratios stay meaningful."""
    times: dict = {k: [] for k in jobs}
    for r in range(warmup + reps):
        for k, f in jobs.items():
            be.synchronize()
            t0 = time.perf_counter()
            f()
            be.synchronize()
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def backend_args(ap: argparse.ArgumentParser) -> None:
    """--device and --dtype, as every benchmark takes them."""
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
