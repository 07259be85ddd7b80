#!/usr/bin/env python3
"""The speed targets, each measured and printed next to its target (not a test).

MNIST config (batch 100, S 100, P=20, Q=41, generator 41->82->784, RBF G=20), random data:

* IS training iteration (is_step + Adam) with ``noise_sharing = sample`` and ``pair``;
* the share of ``xp.matmul``'s peak that the iteration's matrix work reaches;
* a thermo iteration (thermo_step + Adam, 5 temperatures × 20 ULA steps, batch 100);
* one ULA step of the posterior sampler on 100 chains (the slope over 10..30 steps).

Each figure is the median (and min) of ``--repeats`` timed runs after a warm-up, with the
machine's load average printed alongside: on a shared machine take the min. Prints one
JSON object.

    python bench/targets.py [--device cpu|gpu] [--dtype float32] [--repeats 15] [--only ula_step,thermo_iteration]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as cli.py: BLAS threads sleep after a product
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kaem.objectives as lv  # noqa: E402
from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.objectives.importance import is_step  # noqa: E402
from kaem.nn.kan import fixed_parameters  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.optim import Adam  # noqa: E402
from kaem.likelihood.posterior import KAEMPosterior  # noqa: E402
from kaem.samplers import ula  # noqa: E402
from timing import backend_args, timed  # noqa: E402  (bench/timing.py)
from train_step import iteration_flops, matmul_peak  # noqa: E402

TARGETS_MS = {"is_iteration_default": 20.0, "is_iteration_pair": 45.0, "thermo_iteration": 800.0,
              "ula_step": 6.0}
TARGET_MATMUL_FRACTION = 0.30


def _stats(ts: list[float]) -> dict[str, float]:
    return {"median_ms": round(1e3 * float(np.median(ts)), 2), "min_ms": round(1e3 * min(ts), 2)}


def _model(be, dtype: str, overrides: list[str]) -> KAEM:
    return KAEM(load_config("mnist", overrides=[f"TRAINING.dtype={dtype}"] + overrides), (1, 28, 28), be, seed=0)


def is_iteration(be, dtype: str, x, sharing: str, repeats: int) -> dict:
    m = _model(be, dtype, [f"GeneratorModel.noise_sharing={sharing}"])
    opt, rng = Adam(m.parameters()), be.rng(0)

    def step():
        is_step(m, x, rng)
        opt.step(m.gradients())

    out = _stats(timed(be, step, repeats))
    out["matrix_GFLOP"] = round(iteration_flops(m, x.shape[0], m.cfg["TRAINING"]["importance_sample_size"]) / 1e9, 3)
    return out


def thermo_iteration(be, dtype: str, x, repeats: int) -> dict:
    m = _model(be, dtype, ["THERMODYNAMIC_INTEGRATION.num_temps=5", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=20"])
    opt, rng = Adam(m.parameters()), be.rng(1)

    def step():
        lv.thermo_step(m, x, rng, iteration=0, n_updates=100)
        opt.step(m.gradients())

    return _stats(timed(be, step, repeats, warmup=1))


def ula_step(be, dtype: str, x, repeats: int) -> dict:
    """Seconds per ULA step on B chains: the slope between 10 and 30 steps (so the chain
    initialisation and the first evaluation drop out), parameters fixed as in training."""
    m = _model(be, dtype, [])
    rng = be.rng(2)
    target = KAEMPosterior(m, x)
    z0 = m.sample_prior(x.shape[0], rng)

    def run(n):
        with fixed_parameters():
            ula(target, z0, 1.0, 0.01, n, rng)

    t10, t30 = (np.asarray(timed(be, lambda: run(n), repeats, warmup=1)) for n in (10, 30))
    per = (t30 - t10) / 20
    return {"median_ms": round(1e3 * float(np.median(per)), 2), "min_ms": round(1e3 * float(per.min()), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", default=",".join(TARGETS_MS),
                    help=f"comma-separated subset of: {', '.join(TARGETS_MS)} (default: all)")
    args = ap.parse_args()
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in only if k not in TARGETS_MS]
    if bad:
        ap.error(f"--only: unknown {', '.join(bad)}; valid: {', '.join(TARGETS_MS)}")
    be = get_backend(args.device, args.dtype)
    x = be.asarray(np.random.default_rng(1).random((100, 784)))
    runs = {"is_iteration_default": lambda: is_iteration(be, args.dtype, x, load_config("mnist")["GeneratorModel"]["noise_sharing"],
                                                         args.repeats),
            "is_iteration_pair": lambda: is_iteration(be, args.dtype, x, "pair", args.repeats),
            "thermo_iteration": lambda: thermo_iteration(be, args.dtype, x, max(3, args.repeats // 5)),
            "ula_step": lambda: ula_step(be, args.dtype, x, max(3, args.repeats // 3))}
    res = {k: runs[k]() for k in TARGETS_MS if k in only}
    for k in res:
        res[k]["target_ms"] = TARGETS_MS[k]
    if "is_iteration_default" in res:
        peak = matmul_peak(be)
        frac = res["is_iteration_default"]["matrix_GFLOP"] / (res["is_iteration_default"]["min_ms"] / 1e3) * 1e9 / peak
        res["matmul_fraction_default"] = {"matmul_peak_GFLOPs": round(peak / 1e9, 1), "fraction": round(frac, 3),
                                          "target": TARGET_MATMUL_FRACTION}
    res["default_noise_sharing"] = load_config("mnist")["GeneratorModel"]["noise_sharing"]
    res.update({"bench": "targets", "device": be.device, "dtype": args.dtype, "cpus": os.cpu_count(),
                "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()]})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
