#!/usr/bin/env python3
"""Speed of the reference path against the kernels (``KAEM_KERNELS=reference`` vs ``fast``).

One training iteration (the objective's step and an Adam update) at the MNIST config
(batch 100, P=20, Q=41, generator 41->82->784, RBF G=20) for each objective, timed with the
two paths interleaved round-robin so that background load affects both alike. Prints one
JSON object per objective: median ms per iteration on each path and their ratio. Not a test.

    python bench/kernels.py [--device cpu|gpu] [--dtype float32] [--reps 10] [--modes is ula thermo]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as cli.py: idle BLAS threads sleep at once

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem import kernels  # noqa: E402
from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.objectives import training_step  # noqa: E402
from kaem.build import make_optimizer  # noqa: E402
from timing import backend_args, interleaved_medians  # noqa: E402  (bench/timing.py)

MODES = {"is": [], "ula": ["POST_LANGEVIN.use_langevin=true"],
         "automala": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true"],
         "thermo": ["THERMODYNAMIC_INTEGRATION.num_temps=5"]}


def step_on(path: str, model: KAEM, opt, x, rng, state: dict):
    """One iteration on the given kernel path."""
    def run() -> None:
        with kernels.using(path):
            training_step(model, x, rng, iteration=0, n_updates=100, state=state)
            opt.step(model.gradients())
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    for mode in args.modes:
        cfg = load_config("mnist", overrides=[f"TRAINING.dtype={args.dtype}", *MODES[mode]])
        x = be.asarray(np.random.default_rng(1).random((cfg["TRAINING"]["batch_size"], 784)))
        jobs = {}
        for path in kernels.MODES:  # one model per path, so neither path's caches help the other
            model = KAEM(cfg, (1, 28, 28), be, seed=0)
            jobs[path] = step_on(path, model, make_optimizer(model.parameters(), cfg["OPTIMIZER"]), x, be.rng(0), {})
        reps = args.reps if mode in ("is", "ula") else max(3, args.reps // 3)
        med = interleaved_medians(be, jobs, reps, warmup=2)
        print(json.dumps({"bench": "kernels", "objective": mode, "device": be.device, "dtype": args.dtype,
                          "fast_ms": round(1e3 * med["fast"], 1), "reference_ms": round(1e3 * med["reference"], 1),
                          "reference_over_fast": round(med["reference"] / med["fast"], 2), "reps": reps}), flush=True)


if __name__ == "__main__":
    main()
