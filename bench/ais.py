#!/usr/bin/env python3
"""What annealed importance sampling (kaem/evaluation/ais.py) costs, and how many
temperatures it needs.

1. ``cost``: the default Fashion-MNIST model (P = 20, Q = 41, KAN generator 41 -> 82 -> 784,
   random initialisation: the cost does not depend on the parameters), ``--cost-images``
   images, C = ``--chains`` chains each (and the 4 pilot chains), K = ``--cost-temps``:
   seconds per image per temperature for each L in ``--cost-leapfrog`` (after one untimed
   warm-up run), and per chain and leapfrog step (one generator forward + backward).
2. ``bdmc`` (with ``--ckpt``, a trained model): bidirectional Monte Carlo on ``--bdmc-n``
   images simulated from the model, for each K in ``--temps``: lower and upper bound and
   their gap per image (mean ± standard error over images, and the median), with seconds.
   Also the same at one K with the other schedule (``--other-schedule-K``).
3. ``k_vs_2k`` (with ``--ckpt`` and ``--test-images`` > 0): AIS of log p(x) on real test
   images at ``--k-check`` and twice that, per image paired: the mean difference and its
   standard error (the issue's "AIS at K agrees with AIS at 2K within 2 standard errors").

Prints one JSON object (and every finished section as a line on stderr, so a run stopped
early still shows what it measured). Not a test: numbers only.

    python bench/ais.py [--device cpu|gpu] [--ckpt runs/fmnist/ckpt.npz] [--temps 100,300,1000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402
from kaem.evaluation.ais import DEFAULT_CHAINS, DEFAULT_LEAPFROG, DEFAULT_PILOT, DEFAULT_REFRESH, ais_loglik  # noqa: E402
from kaem.evaluation.bdmc import bdmc  # noqa: E402
from kaem.model import KAEM  # noqa: E402
from timing import backend_args  # noqa: E402  (bench/timing.py)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def report(section: str, value: Any, out: dict) -> None:
    out[section] = value
    print(json.dumps({section: value}), file=sys.stderr, flush=True)


def cost(be: Any, args: Any) -> dict[str, Any]:
    """Seconds per image per temperature on the default FMNIST model."""
    m = KAEM(load_config("fmnist", overrides=[f"TRAINING.dtype={args.dtype}"]), (1, 28, 28), be, seed=0)
    n, K, C = args.cost_images, args.cost_temps, args.chains
    x = be.asarray(np.random.default_rng(0).random((n, m.D)))
    ais_loglik(m, x, rng=be.rng(0), temps=2, chains=C, n_leapfrog=1)  # warm-up (cupy kernels, caches)
    rows = {}
    for L in args.cost_leapfrog:
        be.synchronize()
        t0 = time.perf_counter()
        ais_loglik(m, x, rng=be.rng(1), temps=K, chains=C, n_leapfrog=L, refresh=args.refresh)
        be.synchronize()
        s = time.perf_counter() - t0
        rows[f"L={L}"] = {"s_per_image_per_temp": s / (n * K),
                          "s_per_chain_leapfrog": s / (n * (C + DEFAULT_PILOT) * K * L), "seconds": s}
    return {"images": n, "temps": K, "chains": C, "pilot_chains": DEFAULT_PILOT, **rows}


def gaps(m: Any, be: Any, args: Any) -> dict[str, Any]:
    """BDMC bounds and gap vs K on images simulated from the trained model."""
    out = {}
    runs = [(K, args.schedule) for K in args.temps]
    if args.other_schedule_K:
        other = "sigmoid" if args.schedule == "geometric" else "geometric"
        runs.append((args.other_schedule_K, other))
    for K, kind in runs:
        t0 = time.perf_counter()
        r = bdmc(m, args.bdmc_n, rng=be.rng(args.seed), temps=K, chains=args.chains, n_leapfrog=args.leapfrog,
                 schedule=kind, refresh=args.refresh)
        gap = np.asarray(r["bdmc_upper_per_image"]) - np.asarray(r["bdmc_lower_per_image"])
        out[f"{kind} K={K}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()
                                if k.startswith("bdmc_") and "per_image" not in k}
        out[f"{kind} K={K}"].update(gap_median=float(np.median(gap)), gap_max=float(gap.max()),
                                    images_gap_le_1=int((gap <= 1.0).sum()),
                                    seconds=round(time.perf_counter() - t0, 2))
        print(json.dumps({f"bdmc {kind} K={K}": out[f"{kind} K={K}"]}), file=sys.stderr, flush=True)
    return out


def k_vs_2k(m: Any, be: Any, args: Any) -> dict[str, Any]:
    """AIS at K and 2K on the same real test images, paired."""
    from kaem.datasets import load_dataset

    x = load_dataset("fmnist", "test", args.data_dir, download=False, n=args.test_images)
    x = be.asarray(x.reshape(x.shape[0], -1))
    res, per = {}, {}
    for K in (args.k_check, 2 * args.k_check):
        t0 = time.perf_counter()
        r = ais_loglik(m, x, rng=be.rng(args.seed + K), temps=K, chains=args.chains, n_leapfrog=args.leapfrog,
                       schedule=args.schedule, refresh=args.refresh)
        per[K] = np.asarray(r["loglik_per_image"])
        res[f"K={K}"] = {k: r[k] for k in ("loglik_nats", "loglik_se", "loglik_mc_se", "ess", "ess_min", "acceptance")}
        res[f"K={K}"]["seconds"] = round(time.perf_counter() - t0, 2)
        print(json.dumps({f"k_vs_2k K={K}": res[f"K={K}"]}), file=sys.stderr, flush=True)
    d = per[2 * args.k_check] - per[args.k_check]
    res["diff_2K_minus_K"] = float(d.mean())
    res["diff_se"] = float(d.std(ddof=1) / np.sqrt(d.shape[0]))
    res["n_images"] = int(d.shape[0])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    backend_args(ap)
    ap.add_argument("--cost-images", type=int, default=10)
    ap.add_argument("--cost-temps", type=int, default=20)
    ap.add_argument("--cost-leapfrog", type=ints, default=[1, DEFAULT_LEAPFROG])
    ap.add_argument("--chains", type=int, default=DEFAULT_CHAINS)
    ap.add_argument("--leapfrog", type=int, default=DEFAULT_LEAPFROG)
    ap.add_argument("--refresh", type=int, default=DEFAULT_REFRESH, help="refresh moves per temperature")
    ap.add_argument("--schedule", default="geometric", choices=["geometric", "sigmoid"])
    ap.add_argument("--ckpt", help="a trained model's checkpoint for the BDMC and K-vs-2K sections")
    ap.add_argument("--bdmc-n", type=int, default=20)
    ap.add_argument("--temps", type=ints, default=[100, 300, 1000])
    ap.add_argument("--other-schedule-K", type=int, default=0)
    ap.add_argument("--test-images", type=int, default=0)
    ap.add_argument("--k-check", type=int, default=1000)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args()
    be = get_backend(args.device, args.dtype)
    out: dict[str, Any] = {"device": be.device, "dtype": args.dtype, "chains": args.chains,
                           "leapfrog": args.leapfrog, "refresh": args.refresh, "schedule": args.schedule}
    if not args.skip_cost:
        report("cost", cost(be, args), out)
    if args.ckpt:
        from kaem.run.checkpoint import load_checkpoint, restore_model

        ckpt = load_checkpoint(args.ckpt)
        m = restore_model(ckpt, be)
        out["model"] = {"ckpt": args.ckpt, "iteration": int(ckpt["meta"]["iteration"])}
        report("bdmc", gaps(m, be, args), out)
        if args.test_images:
            report("k_vs_2k", k_vs_2k(m, be, args), out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
