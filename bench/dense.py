#!/usr/bin/env python3
"""The dense part of an IS training iteration, piece by piece, at the MNIST sizes.

* the generator's big KAN layer (82 -> 784, RBF G=20, N = S = 100 inputs): building its
  weight matrix Wn, forward, backward with parameter gradients (three matrix products of
  0.27 GFLOP each, plus the weight passes);
* one Adam step over the MNIST model's parameters (≈ 1.57 M);
* the ``pair`` likelihood over (S, B, D) = (100, 100, 784): forward (noise draw included)
  and backward.

Each figure is the min and median wall time of ``--repeats`` runs after a warm-up (on a
shared machine take the min) and the min CPU time of the process (all its threads): with
``KAEM_THREADS=1 OPENBLAS_NUM_THREADS=1`` that is the one-core work, which other load on
the machine disturbs far less than wall time. Prints one JSON object.

    python bench/dense.py [--device cpu|gpu] [--dtype float32] [--repeats 20]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.nn.kan import KANLayer, KANSpec, fixed_parameters  # noqa: E402
from kaem.likelihood.gaussian import GaussianLikelihood  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.optim import Adam  # noqa: E402
from kaem.kernels.threads import cpu_threads  # noqa: E402
from timing import backend_args  # noqa: E402  (bench/timing.py)


def measured(be, fn, n: int, warmup: int = 3) -> dict[str, float]:
    """Min and median wall time and min process CPU time of ``n`` calls of ``fn``, in ms."""
    for _ in range(warmup):
        fn()
    be.synchronize()
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        be.synchronize()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"min_ms": round(1e3 * min(wall), 2), "median_ms": round(1e3 * float(np.median(wall)), 2),
            "cpu_min_ms": round(1e3 * min(cpu), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    backend_args(ap)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    n = args.repeats
    r = np.random.default_rng(0)
    res: dict = {}

    layer = KANLayer(be, 82, 784, KANSpec(), be.rng(0))
    x = be.asarray(r.uniform(-1, 1, (100, 82)))
    dy = be.asarray(r.standard_normal((100, 784)))

    def fwd_bwd():
        with fixed_parameters():
            layer.forward(x)
            layer.backward(dy)

    res["layer_82_784_weights"] = measured(be, layer.network_weights, n)
    res["layer_82_784_forward"] = measured(be, lambda: layer.forward(x), n)
    res["layer_82_784_forward_backward"] = measured(be, fwd_bwd, n)

    m = KAEM(load_config("mnist", overrides=[f"TRAINING.dtype={args.dtype}"]), (1, 28, 28), be, seed=0)
    opt, grads = Adam(m.parameters()), m.gradients()
    for g in grads.values():
        g[...] = be.asarray(r.standard_normal(g.shape))
    res["adam_step"] = measured(be, lambda: opt.step(grads), n)
    res["adam_step"]["parameters"] = int(sum(p.size for p in m.parameters().values()))

    lik, rng = GaussianLikelihood(0.3, 0.1, "sigmoid", "pair"), be.rng(1)
    xb = be.asarray(r.random((100, 784)))
    gs = be.asarray(r.standard_normal((100, 784)))
    dll = be.asarray(r.random((100, 100)))
    res["pair_forward"] = measured(be, lambda: lik.log_lik_pairs(xb, gs, rng=rng), max(3, n // 2))
    res["pair_backward"] = measured(be, lambda: lik.backward_pairs(dll), n)

    res.update({"bench": "dense", "device": be.device, "dtype": args.dtype, "threads": cpu_threads(),
                "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()]})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
