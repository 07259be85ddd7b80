#!/usr/bin/env python3
"""The lower bound this machine puts under each speed target (not a test).

No implementation of a step can beat its compulsory work done at this machine's best
measured rates:

    t_floor = n_exp · t_exp  +  FLOP / matmul_peak  +  bytes / memory_bandwidth

* n_exp: one exp per entry of every basis function, activation and output the step must
  evaluate (RBF bumps, SiLU, the sigmoid), and one per normal draw (injection noise,
  Langevin noise: no draw is cheaper than an exp), at the best float exp rate of one
  thread or of all threads together (``kaem/threads.py`` blocks);
* FLOP: the step's matrix work (``bench/train_step.iteration_flops`` for IS);
* bytes: Adam's read of p, g, m, v and write of p, m, v over every parameter.

Everything else a step does (inverse-transform interpolation, the other elementwise
passes, building W = w_sp ⊙ c, Python) is left out, so each floor is optimistic. A target
at or under its floor cannot be met on this machine; one just above it leaves only the
difference for all the work not counted. Prints one JSON object: the rates, then per
target the counts, the floor and the target.

    python bench/floor.py [--dtype float32]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as cli.py
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from kaem.kernels.threads import cpu_threads, map_blocks  # noqa: E402
from targets import TARGETS_MS  # noqa: E402  (bench/targets.py)
from timing import timed  # noqa: E402  (bench/timing.py)
from train_step import iteration_flops, matmul_peak  # noqa: E402


def _best(fn, reps: int) -> float:
    """Fastest of ``reps`` calls after one warm-up, seconds (host arrays: no device sync)."""
    return min(timed(get_backend("cpu"), fn, reps, warmup=1))


def exp_ns(dtype: str, n: int = 1 << 15, calls: int = 50, reps: int = 40) -> dict[str, float]:
    """ns per exp of an in-cache array (arguments of RBF bumps, −u²/2 with |u| < 8), one
    thread and all threads (one array each), and the best of the two."""
    k = cpu_threads()
    a = (-0.5 * np.random.default_rng(0).uniform(-8, 8, (k, n)) ** 2).astype(dtype)
    o = np.empty_like(a)

    def run(i: int, _: int = 0) -> None:
        for _ in range(calls):
            np.exp(a[i], out=o[i])

    one = _best(lambda: run(0), reps) / (calls * n) * 1e9
    alln = _best(lambda: map_blocks(run, [(i, i + 1) for i in range(k)]), reps) / (k * calls * n) * 1e9
    return {"one_thread": round(one, 3), "all_threads": round(alln, 3), "threads": k, "best": round(min(one, alln), 3)}


def memory_GBs(dtype: str, n: int = 1 << 24, reps: int = 7) -> float:
    """Copy bandwidth (bytes read + written per second) of arrays far larger than the caches,
    the best of one thread and all threads."""
    k = cpu_threads()
    a, b = np.ones(n, dtype=dtype), np.empty(n, dtype=dtype)
    edges = [n * j // k for j in range(k + 1)]
    one = _best(lambda: np.copyto(b, a), reps)
    alln = _best(lambda: map_blocks(lambda s, e: np.copyto(b[s:e], a[s:e]), list(zip(edges[:-1], edges[1:]))), reps)
    return 2 * a.nbytes / min(one, alln) / 1e9


def counts(model: KAEM, B: int, S: int) -> dict[str, dict[str, float]]:
    """Compulsory exps, matrix FLOP and optimiser bytes of each timed step (MNIST config)."""
    prior = model.prior
    nb_p = prior.layer.basis.n_basis()
    QP = model.Q * prior.P
    gen_exp = sum(layer.in_dim * (layer.basis.n_basis() + 1) for layer in model.generator.layers)  # bumps + SiLU, per latent
    gen_fwd = sum(2 * layer.in_dim * (layer.basis.n_basis() + 1) * layer.out_dim for layer in model.generator.layers)
    n_par = sum(int(p.size) for p in model.parameters().values())
    itemsize = np.dtype(model.be.dtype).itemsize
    cd = model.cfg["TRAINING"]["contrastive_divergence_training"]
    adam = 7 * itemsize * n_par
    is_exp = (2 if cd else 1) * S * QP * nb_p + S * gen_exp  # prior loss on S (+ S' CD) samples, generator on S
    # output activation and noise ξ: per latent sample (sample sharing) or per (datum, sample) (pair)
    out = {"is_iteration_default": {"exp": is_exp + 2 * S * model.D, "FLOP": iteration_flops(model, B, S), "bytes": adam},
           "is_iteration_pair": {"exp": is_exp + 2 * B * S * model.D, "FLOP": iteration_flops(model, B, S), "bytes": adam}}
    # a ULA step on B chains: the prior's value and slope, the generator forward and its
    # input gradient, the output activation, the Langevin noise
    ula = {"exp": B * (QP * nb_p + gen_exp + model.D + QP), "FLOP": 2 * B * gen_fwd, "bytes": 0}
    steps = 5 * 20  # bench/targets.py's thermo iteration: 5 temperatures × 20 ULA steps
    out["thermo_iteration"] = {k: steps * v for k, v in ula.items()}
    out["thermo_iteration"]["bytes"] = adam
    out["ula_step"] = ula
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    be = get_backend("cpu", args.dtype)
    model = KAEM(load_config("mnist", overrides=[f"TRAINING.dtype={args.dtype}"]), (1, 28, 28), be, seed=0)
    tr = model.cfg["TRAINING"]
    B, S = tr["batch_size"], tr["importance_sample_size"]
    e = exp_ns(args.dtype)
    mem, peak = memory_GBs(args.dtype), matmul_peak(be)
    res: dict = {"rates": {"exp_ns": e, "memory_GBs": round(mem, 1), "matmul_peak_GFLOPs": round(peak / 1e9, 1)}}
    for name, c in counts(model, B, S).items():
        parts = {"exp_ms": c["exp"] * e["best"] * 1e-6, "matmul_ms": c["FLOP"] / peak * 1e3,
                 "memory_ms": c["bytes"] / (mem * 1e9) * 1e3}
        floor = sum(parts.values())
        res[name] = {"exps_M": round(c["exp"] / 1e6, 2), "GFLOP": round(c["FLOP"] / 1e9, 3),
                     "optimiser_MB": round(c["bytes"] / 1e6, 1), **{k: round(v, 2) for k, v in parts.items()},
                     "floor_ms": round(floor, 2), "target_ms": TARGETS_MS[name],
                     "target_over_floor": round(TARGETS_MS[name] / floor, 2)}
    n_train = load_config("fmnist")["TRAINING"]["N_train"]
    epochs = 10 * n_train // B  # the targets' 10 Fashion-MNIST epochs, evaluations not counted
    res["ten_epochs"] = {"iterations": epochs, "floor_s": round(epochs * res["is_iteration_default"]["floor_ms"] / 1e3, 1),
                         "target_s": 180.0}
    res.update({"bench": "floor", "dtype": args.dtype, "cpus": os.cpu_count(),
                "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()]})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
