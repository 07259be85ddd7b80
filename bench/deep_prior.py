#!/usr/bin/env python3
"""The deep energy prior's price: prior Langevin sampling against inverse transform.

1. Prior sampling time vs the number of prior-ULA steps 10..50 (the reference's
   ``prior_steps`` bench) for Pang et al.'s energy 100 -> 200 -> 200 -> 1, KAN body (the
   reference's pang configs: FFT, G = 50) and MLP body (GELU), 100 chains; against one
   inverse-transform draw of 100 latents from a univariate prior with the same Q = 100
   (P = 20, RBF G = 20).
2. One training iteration (step function + Adam) with the MNIST/FMNIST model — KAN
   generator 41 -> 82 -> 784 (RBF G = 20), batch 100, importance sampling with S = 100 —
   and each prior: the univariate prior (P = 20, Q = 41) sampled by inverse transform, and
   the deep prior 41 -> 200 -> 200 -> 1 (KAN body with the prior's RBF G = 20, or MLP)
   sampled by 60 ULA steps of η = 0.16 (PRIOR_LANGEVIN), 2S draws per iteration (S for
   importance sampling, S for the contrastive-divergence term). The ratio to the
   univariate iteration is the speed claim of the KAEM paper, measured in one codebase.
   Iterations are measured interleaved (round robin), so machine load drifts hit all alike.

Each figure is reported as the median and the minimum of ``--repeats`` runs; the fits use
the minima, the least disturbed by other work on a shared machine. On a loaded machine run
it with OPENBLAS_NUM_THREADS=1: two-thread BLAS on the small matrices of the MLP energy
waits for its descheduled second thread (20× slower here at load 10).

Prints one JSON object. Not a test: numbers only.

    python bench/deep_prior.py [--device cpu|gpu] [--dtype float32] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.objectives.importance import is_step  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.optim import Adam  # noqa: E402
from samplers import fit, load_batch  # noqa: E402  (bench/samplers.py)
from timing import backend_args, timed  # noqa: E402  (bench/timing.py)

STEPS = (10, 20, 30, 40, 50)
DEEP = ["EbmModel.π_0=gaussian"]
BODIES = {"kan_fft50": ["EbmModel.deep_body=kan", "EbmModel.spline_function=FFT", "EbmModel.grid_size=50"],
          "mlp_gelu": ["EbmModel.deep_body=mlp", "EbmModel.base_activation=gelu"]}


def model(be: Any, dtype: str, overrides: list[str]) -> KAEM:
    return KAEM(load_config("fmnist", overrides=[f"TRAINING.dtype={dtype}", *overrides]), (1, 28, 28), be, seed=0)


def prior_steps(be: Any, dtype: str, repeats: int) -> dict[str, Any]:
    """Seconds to draw 100 latents vs prior-ULA steps, per body; ITS at the same Q."""
    out: dict[str, Any] = {}
    rng = be.rng(0)
    for name, body in BODIES.items():
        m = model(be, dtype, DEEP + body + ["EbmModel.layer_widths=100,200,200,1", "GeneratorModel.widths=100,200"])
        med, low = [], []
        for n in STEPS:
            m.prior.n_steps = n
            t = timed(be, lambda: m.prior.sample(100, rng), repeats, warmup=1)
            med.append(float(np.median(t)))
            low.append(min(t))
            print(f"  {name}: {n} steps {med[-1]:.3f} s (min {low[-1]:.3f})", file=sys.stderr)
        f = fit(STEPS, low)
        out[name] = {"median_s": [round(v, 4) for v in med], "min_s": [round(v, 4) for v in low],
                     "ms_per_step_of_min": round(1e3 * f["slope_s"], 2), "r2_of_min": round(f["r2"], 4)}
    uni = model(be, dtype, ["EbmModel.layer_widths=20,100", "GeneratorModel.widths=100,200"])
    t = timed(be, lambda: uni.sample_prior(100, rng), 20)
    out["its_100_draws_ms"] = {"median": round(1e3 * float(np.median(t)), 3), "min": round(1e3 * min(t), 3)}
    return out


def iterations(be: Any, dtype: str, x: Any, repeats: int) -> dict[str, Any]:
    """Median seconds of an IS training iteration per prior, measured round robin."""
    deep = DEEP + ["EbmModel.layer_widths=41,200,200,1"]
    setups = {"univariate_its": [],
              "deep_kan_rbf20": deep + ["EbmModel.deep_body=kan"],
              "deep_mlp_gelu": deep + ["EbmModel.deep_body=mlp", "EbmModel.base_activation=gelu"]}
    rng = be.rng(1)
    steps = {}
    for name, ov in setups.items():
        m = model(be, dtype, ov)
        opt = Adam(m.parameters(), lr=1e-3)

        def step(m=m, opt=opt):
            is_step(m, x, rng)
            opt.step(m.gradients())
        steps[name] = step
        step()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name] += timed(be, step, 1, warmup=0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    return {k: {"median_ms": round(1e3 * med[k], 1), "min_ms": round(1e3 * low[k], 1),
                "ratio_to_univariate_median": round(med[k] / med["univariate_its"], 2),
                "ratio_to_univariate_min": round(low[k] / low["univariate_its"], 2)} for k in times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    xb, source = load_batch(100)
    print("prior sampling vs prior-ULA steps", file=sys.stderr)
    ps = prior_steps(be, args.dtype, args.repeats)
    print("training iterations (IS, S = 100, batch 100)", file=sys.stderr)
    it = iterations(be, args.dtype, be.asarray(xb), args.repeats)
    print(json.dumps({"bench": "deep_prior", "device": be.device, "dtype": args.dtype, "data": source,
                      "prior_sampling_100_latents": ps, "is_iteration": it, "threads": os.cpu_count()}))


if __name__ == "__main__":
    main()
