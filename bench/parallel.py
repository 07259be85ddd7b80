#!/usr/bin/env python3
"""Iteration time and bytes communicated over MPI ranks (needs the mpi extra).

For the MNIST config (batch 100, P=20, Q=41, generator 41->82->784, RBF G=20) and each
objective (IS, and thermodynamic integration with 5 temperatures), times one training
iteration (the objective's step on this rank's share, the sum of the gradients over the
ranks, the Adam update) as

* 1 rank with 2 threads (``KAEM_THREADS=2``, BLAS 2 threads),
* 2 ranks with 1 thread each (``mpiexec -n 2``, ``--parallel data``; thermo also
  ``--parallel temperatures``),

and prints one JSON object per case: median ms per iteration and the bytes one rank sent per
iteration. Not a test.

    python bench/parallel.py [--iters 20] [--objectives is thermo]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OBJECTIVES = {"is": [], "thermo": ["THERMODYNAMIC_INTEGRATION.num_temps=5"]}


def worker(objective: str, parallel: str, iters: int) -> None:
    """One rank's timing loop (run under mpiexec, or alone)."""
    import numpy as np

    from kaem.backend import get_backend
    from kaem.build import make_optimizer
    from kaem.config import load_config
    from kaem.model import KAEM
    from kaem.objectives import training_step
    from kaem.parallel import Split, get_comm

    comm = get_comm()
    be = get_backend("cpu", "float32")
    cfg = load_config("mnist", overrides=OBJECTIVES[objective])
    model = KAEM(cfg, (1, 28, 28), be, seed=0)
    opt = make_optimizer(model.parameters(), cfg["OPTIMIZER"])
    x = np.random.default_rng(1).random((cfg["TRAINING"]["batch_size"], 784)).astype(np.float32)
    rng, times, sent = be.rng(0), [], []
    split = Split.of(comm, x.shape[0], parallel)
    for i in range(iters + 2):
        comm.barrier() if comm.size > 1 else None
        t0, b0 = time.perf_counter(), comm.bytes_sent
        loss, _ = training_step(model, x[split.lo:split.hi], rng, i, 100, {}, split)
        grads = list(model.gradients().values())
        comm.allreduce_(*grads)
        opt.step(model.gradients())
        if i >= 2:  # two warm-up iterations
            times.append(time.perf_counter() - t0)
            sent.append(comm.bytes_sent - b0)
    if comm.rank == 0:
        print(json.dumps({"ms": 1e3 * statistics.median(times), "bytes_per_iter": int(statistics.median(sent))}))


def run_case(objective: str, ranks: int, threads: int, parallel: str, iters: int) -> dict:
    """Time one case in a fresh process (or MPI job) with the given threads per rank."""
    env = {**os.environ, "KAEM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads), "OPENBLAS_THREAD_TIMEOUT": "4"}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", objective, parallel, str(iters)]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    ap.add_argument("--worker", nargs=3, metavar=("OBJECTIVE", "PARALLEL", "ITERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    for objective in args.objectives:
        iters = args.iters if objective == "is" else max(3, args.iters // 5)
        cases = [(1, 2, "data"), (2, 1, "data")] + ([(2, 1, "temperatures")] if objective == "thermo" else [])
        for ranks, threads, parallel in cases:
            res = run_case(objective, ranks, threads, parallel, iters)
            print(json.dumps({"bench": "parallel", "objective": objective, "ranks": ranks, "threads_per_rank": threads,
                              "parallel": parallel, "ms_per_iter_median": round(res["ms"], 1),
                              "bytes_sent_per_iter": res["bytes_per_iter"], "iters": iters}), flush=True)


if __name__ == "__main__":
    main()
