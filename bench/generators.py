#!/usr/bin/env python3
"""Speed of the conv-transpose generator at the reference's SVHN and CelebA architectures.

For each architecture (method §5; kernel 4, strides 1,2,2,2(,2), paddings 0,1,1,1(,1)):

* SVHN   81 -> 128 -> 64 -> 32 -> 3,          1 -> 4 -> 8 -> 16 -> 32
* CelebA 81 -> 256 -> 128 -> 64 -> 32 -> 3,   1 -> 4 -> 8 -> 16 -> 32 -> 64

it times, on N latents (default 100, the batch size), the forward pass with cache, the
backward pass with parameter gradients and dh (what a training loss needs) and without
parameter gradients (what a Langevin step needs), and counts the matrix work (forward
2·N·H·W·Cin·k²·Cout per layer, backward twice that) against the measured ``xp.matmul`` peak.
The share of the time spent outside the matrix products (col2im / im2col over the k²
kernel offsets, activations, copies) is the forward time minus the time of the forward's
matrix products alone.

With ``--iterations`` it also times one training iteration (step + Adam) at the ``svhn``
preset in ULA mode and in thermo mode, batch ``--batch``.

Prints one JSON object. Medians of ``--repeats`` runs after warm-up.

    python bench/generators.py [--device cpu|gpu] [--dtype float32] [--n 100] [--repeats 10]
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
from kaem.generators import ConvGenerator  # noqa: E402
from timing import backend_args, timed  # noqa: E402  (bench/timing.py)
from train_step import matmul_peak  # noqa: E402  (bench/train_step.py)

ARCHS = {
    "svhn": dict(channels=[81, 128, 64, 32, 3], kernels=[4] * 4, strides=[1, 2, 2, 2], paddings=[0, 1, 1, 1]),
    "celeba": dict(channels=[81, 256, 128, 64, 32, 3], kernels=[4] * 5, strides=[1, 2, 2, 2, 2],
                   paddings=[0, 1, 1, 1, 1]),
}


def forward_flops(gen: ConvGenerator, N: int) -> float:
    """2·N·H_in²·Cin·k²·Cout summed over the layers (the forward's matrix products)."""
    return sum(2.0 * N * gen.sizes[i] ** 2 * (layer.cin + layer.latent_in) * layer.k ** 2 * layer.cout
               for i, layer in enumerate(gen.layers))


def median_ms(be: Any, fn: Any, repeats: int) -> float:
    return 1e3 * float(np.median(timed(be, fn, repeats)))


def bench_arch(be: Any, name: str, N: int, repeats: int, peak: float) -> dict[str, Any]:
    gen = ConvGenerator(be, rng=be.rng(0), activation="leakyrelu", **ARCHS[name])
    rng = be.rng(1)
    h = rng.standard_normal((N, gen.Q), dtype=be.dtype)
    dg = rng.standard_normal((N, int(np.prod(gen.out_shape))), dtype=be.dtype)

    def fwd() -> None:
        gen.forward(h)

    def fwd_bwd() -> None:
        gen.forward(h)
        gen.backward(dg)

    def fwd_bwd_sampler() -> None:
        gen.forward(h)
        gen.backward(dg, need_params=False)

    # the forward's matrix products alone, on arrays of the same shapes
    mats = [(be.xp.ones((N * gen.sizes[i] ** 2, layer.cin), dtype=be.dtype),
             layer.params["w"].reshape(layer.cin, -1)) for i, layer in enumerate(gen.layers)]

    def matmuls() -> None:
        for a, w in mats:
            a @ w

    t_fwd, t_all = median_ms(be, fwd, repeats), median_ms(be, fwd_bwd, repeats)
    t_samp, t_mm = median_ms(be, fwd_bwd_sampler, repeats), median_ms(be, matmuls, repeats)
    fl = forward_flops(gen, N)
    return {
        "arch": name, "channels": ARCHS[name]["channels"], "sizes": gen.sizes,
        "parameters": int(sum(p.size for p in gen.params.values())),
        "forward_ms": round(t_fwd, 2), "forward_backward_ms": round(t_all, 2),
        "forward_backward_dh_only_ms": round(t_samp, 2),
        "forward_matmuls_only_ms": round(t_mm, 2),
        "forward_non_matmul_fraction": round(1 - t_mm / t_fwd, 3),
        "forward_backward_GFLOP": round(3 * fl / 1e9, 3),
        "achieved_GFLOPs": round(3 * fl / (t_all / 1e3) / 1e9, 1),
        "fraction_of_matmul_peak": round(3 * fl / (t_all / 1e3) / peak, 3),
    }


def bench_iterations(be: Any, dtype: str, B: int, repeats: int) -> dict[str, Any]:
    """One training iteration (step + Adam) at the svhn preset, ULA and thermo mode."""
    from kaem.config import load_config
    from kaem.objectives import training_step
    from kaem.model import KAEM
    from kaem.optim import Adam

    out: dict[str, Any] = {}
    for mode, sets in (("ula", ["POST_LANGEVIN.use_langevin=true", "THERMODYNAMIC_INTEGRATION.num_temps=1"]),
                       ("thermo", ["THERMODYNAMIC_INTEGRATION.num_temps=5"])):
        cfg = load_config("svhn", overrides=sets + [f"TRAINING.dtype={dtype}", f"TRAINING.batch_size={B}"])
        model = KAEM(cfg, (3, 32, 32), be, seed=0)
        opt = Adam(model.parameters(), lr=1e-4)
        rng = be.rng(0)
        x = be.asarray(np.random.default_rng(1).random((B, model.D)))

        def step() -> None:
            training_step(model, x, rng, 0, 100, {})
            opt.step(model.gradients())

        out[f"{mode}_iteration_s"] = round(float(np.median(timed(be, step, repeats, warmup=1))), 3)
    pl, ti = cfg["POST_LANGEVIN"], cfg["THERMODYNAMIC_INTEGRATION"]
    out["iteration_setup"] = (f"svhn preset, batch {B}: ULA {pl['iters']} steps; thermo {ti['num_temps']} "
                              f"temperatures × {ti['N_langevin_per_temp']} steps")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--n", type=int, default=100, help="latents per pass (default: 100)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--iterations", action="store_true", help="also time ULA and thermo iterations at the svhn preset")
    ap.add_argument("--batch", type=int, default=100, help="batch of those iterations (default: 100)")
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    peak = matmul_peak(be)
    res: dict[str, Any] = {"bench": "generators", "device": be.device, "dtype": args.dtype, "N": args.n,
                           "matmul_peak_GFLOPs": round(peak / 1e9, 1), "threads": os.cpu_count()}
    res["archs"] = [bench_arch(be, name, args.n, args.repeats, peak) for name in ARCHS]
    if args.iterations:
        res.update(bench_iterations(be, args.dtype, args.batch, max(1, args.repeats // 5)))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
