#!/usr/bin/env python3
"""Speed and memory of one importance-sampling training iteration at the MNIST config.

Prints one JSON object: median ms per iteration (batch 100, S 100, P=20, Q=41, generator
41->82->784, RBF G=20) after warm-up, the inverse-transform time for 100 prior draws,
peak memory, and the FLOP rate of the iteration's matrix work against the measured peak
of ``xp.matmul`` on the same device. Not a test: numbers only.

    python bench/train_step.py [--device cpu|gpu] [--dtype float32] [--iters 30]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.objectives.importance import is_step  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.optim import Adam  # noqa: E402
from timing import backend_args, timed  # noqa: E402  (bench/timing.py)


def matmul_peak(be, n: int = 2048) -> float:
    """FLOP/s of an n×n×n matmul in the backend's dtype (best of 5)."""
    a = be.asarray(np.random.default_rng(0).standard_normal((n, n)))
    return 2 * n ** 3 / min(timed(be, lambda: a @ a, 5, warmup=1))


def iteration_flops(model: KAEM, B: int, S: int) -> float:
    """Multiply-adds ×2 of the iteration's matrix work (forward + backward ≈ 3× forward):
    KAN generator layers on S latents, the prior's pointwise functions on 2S samples, and
    the likelihood's two (B, S, D) contractions (x·yᵀ and its backward with noise_sharing
    = sample; the batched backward product with pair, whose elementwise pass is excluded)."""
    fl = 0.0
    for layer in model.generator.layers:
        nb = layer.basis.n_basis()
        fl += 3 * 2 * S * layer.in_dim * (nb + 1) * layer.out_dim
    nb = model.prior.layer.basis.n_basis()
    K = model.prior.quadrature()[0].shape[0]
    fl += 3 * 2 * (2 * S) * model.Q * model.prior.P * (nb + 1) + 2 * K * model.Q * model.prior.P * nb
    fl += (2 if model.lik.sharing == "sample" else 1) * 2 * B * S * model.D
    return fl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    cfg = load_config("mnist", overrides=[f"TRAINING.dtype={args.dtype}"])
    model = KAEM(cfg, (1, 28, 28), be, seed=0)
    rng = be.rng(0)
    B, S = cfg["TRAINING"]["batch_size"], cfg["TRAINING"]["importance_sample_size"]
    x = be.asarray(np.random.default_rng(1).random((B, model.D)))
    opt = Adam(model.parameters(), lr=1e-3)

    def step():
        is_step(model, x, rng)
        opt.step(model.gradients())

    step_s = timed(be, step, args.iters)
    its_s = timed(be, lambda: model.sample_prior(100, rng), 50)
    peak = matmul_peak(be)
    flops = iteration_flops(model, B, S)
    med = float(np.median(step_s))
    if be.device == "gpu":
        mem = be.xp.get_default_memory_pool().total_bytes()
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "bench": "train_step", "device": be.device, "dtype": args.dtype, "batch": B, "S": S,
        "ms_per_iter_median": round(1e3 * med, 2), "ms_per_iter_p90": round(1e3 * float(np.percentile(step_s, 90)), 2),
        "its_100_draws_ms_median": round(1e3 * float(np.median(its_s)), 3),
        "peak_memory_MiB": round(mem / 2 ** 20, 1),
        "matmul_peak_GFLOPs": round(peak / 1e9, 1),
        "iter_matrix_GFLOP": round(flops / 1e9, 3),
        "achieved_GFLOPs": round(flops / med / 1e9, 1),
        "fraction_of_matmul_peak": round(flops / med / peak, 3),
        "mnist_10_epochs_min_estimate": round(5000 * med / 60, 1),
        "threads": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
