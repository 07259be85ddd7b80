#!/usr/bin/env python3
"""How reliable is the deep prior's log Z by importance sampling from π0 at Q = 100?

log Ẑ = log mean_i exp f(z_i), z_i ~ N(0, I_Q) (``DeepPrior.estimate_log_Z``), for n draws:

1. Known Z. An affine energy f(z) = w·z + b (the MLP body without activation) has
   Z = E_π0[exp f] = exp(b + |w|²/2) exactly, and its weights are log-normal with
   Var(e^f)/E[e^f]² = exp(|w|²) − 1, so the tilt |w|² sets the difficulty: the true
   standard error is sqrt((exp|w|² − 1)/n), and for |w|² ≫ log n the estimate is biased low
   while the reported standard error (from the sample variance) is far too small. The
   thermodynamic-integration estimate of part 2 (20 rungs, 200 steps) is run on each too.
2. A trained prior (``--ckpt``, e.g. the fmnist-deep run): the spread of log Ẑ over seeds
   for each n against the mean reported standard error, and the effective sample size;
   against a reference value by thermodynamic integration with the project's samplers:
   with π0 as the "prior" and e^f as the "likelihood", the power posteriors
   π_t ∝ π0·e^{t f} bridge π0 (t = 0) to π (t = 1) and log Z = ∫_0^1 E_{π_t}[f] dt
   (``thermo_sample`` with ULA and replica exchange, ``ti_log_evidence``, trapezoid rule;
   ``--ti-temps`` rungs t_k = (k/K)^3, 100 chains each). Where the two disagree by more than
   their errors, π has moved where π0 draws do not go.

Prints one JSON object (``--seeds`` estimates per point). Not a test: numbers only.

    python bench/deep_logz.py [--ckpt runs/fmnist-deep/ckpt.npz] [--seeds 10] [--ti-temps 40]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kaem.backend import get_backend  # noqa: E402
from kaem.nn.kan import KANSpec  # noqa: E402
from kaem.priors import DeepPrior  # noqa: E402

Q = 100
NS = (1_000, 10_000, 100_000)
TILTS = (0.25, 1.0, 4.0, 16.0, 100.0)  # |w|²


def spread(prior: Any, be: Any, n: int, seeds: int, truth: float | None = None) -> dict[str, float]:
    """log Ẑ over ``seeds`` independent runs of n draws: mean, std, mean reported se, mean ESS
    (and the mean error when the truth is known)."""
    est = [prior.estimate_log_Z(n, be.rng(1000 + s)) for s in range(seeds)]
    v = np.array([e["logZ"] for e in est])
    out = {"n": n, "mean": float(v.mean()), "std_over_seeds": float(v.std(ddof=1)),
           "mean_reported_se": float(np.mean([e["se"] for e in est])),
           "mean_ess": float(np.mean([e["ess"] for e in est]))}
    if truth is not None:
        out["mean_error"] = float(v.mean() - truth)
        out["true_se"] = math.sqrt(math.expm1(min(tilt_of(prior), 700.0)) / n)
    return out


def tilt_of(prior: Any) -> float:
    """|w|² of an affine (activation-free) MLP energy: w = W_1 W_2 ... (a column)."""
    w = prior.params["0.w"]
    for i in range(1, len(prior.widths) - 1):
        w = w @ prior.params[f"{i}.w"]
    return float((w * w).sum())


def known_z(be: Any, seeds: int) -> list[dict[str, Any]]:
    rows = []
    for t in TILTS:
        prior = DeepPrior(be, (Q, 1, 1), "mlp", KANSpec(activation="none"), be.rng(0))
        w = prior.params["0.w"]
        w *= math.sqrt(t / float((w * w).sum())) / float(prior.params["1.w"][0, 0])
        prior.params["1.b"][...] = 0.3
        truth = 0.3 + 0.5 * tilt_of(prior)
        rows.append({"tilt_w2": t, "logZ_true": truth,
                     "by_n": [spread(prior, be, n, seeds, truth) for n in NS],
                     "thermodynamic_integration": ti_log_Z(prior, be, 20, 200, 0.05)})
        print(f"  |w|² = {t}: done", file=sys.stderr)
    return rows


class Tilt:
    """Sampler target with log p(z) = log π0(z) and log p(x|z) = f(z): tempering by t gives
    π_t ∝ π0·e^{t f}, whose 'evidence' at t = 1 is Z."""

    def __init__(self, prior: Any) -> None:
        self.prior = prior

    def log_prior(self, z: Any) -> tuple[Any, Any]:
        return self.prior.log_pi0(z), -z

    def log_lik(self, z: Any) -> tuple[Any, Any]:
        lp, g = self.prior.log_unnorm_and_grad(z)  # f + log π0 and ∇f − z
        return lp - self.prior.log_pi0(z), g + z


def ti_log_Z(prior: Any, be: Any, n_temps: int, steps: int, eta: float, chains: int = 100) -> dict[str, float]:
    """log Z by thermodynamic integration over π_t ∝ π0 e^{t f}: mean and standard error over
    the ``chains`` independent ladders (column b of the (K, B) f values is one estimate)."""
    from kaem.samplers import temperature_ladder, thermo_sample, ti_log_evidence

    temps = temperature_ladder(n_temps - 1, 3.0)
    z0 = prior.sample_pi0(n_temps * chains, be.rng(7))
    _, f, info = thermo_sample(Tilt(prior), z0, temps, steps, eta, be.rng(8), exchange_every=1)
    est = ti_log_evidence(f, temps, rule="trapezoid")
    return {"logZ": float(est.mean()), "se": float(est.std(ddof=1) / math.sqrt(chains)), "temps": n_temps,
            "steps": steps, "eta": eta, "swap_rate": float(info["swap_rate"]),
            "E_f_at_t": {str(round(t, 4)): round(float(v), 2) for t, v in zip(temps, f.mean(axis=1))}}


def trained(be: Any, path: str, seeds: int, n_temps: int, steps: int) -> dict[str, Any]:
    from kaem.run.checkpoint import load_checkpoint, restore_model

    ckpt = load_checkpoint(path)
    be = get_backend(be.device, ckpt["meta"]["dtype"])  # the checkpoint's float type
    model = restore_model(ckpt, be)
    if model.prior.kind != "deep":
        raise SystemExit(f"error: {path} does not hold a deep prior")
    prior = model.prior
    z = prior.sample(2000, be.rng(9))
    return {"ckpt": path, "iteration": int(ckpt["meta"]["iteration"]), "Q": prior.Q, "body": prior.body,
            "by_n": [spread(prior, be, n, seeds) for n in NS],
            "thermodynamic_integration": ti_log_Z(prior, be, n_temps, steps, 0.05),
            "prior_ula_draws": {"mean_norm_z": float(be.xp.linalg.norm(z, axis=1).mean()),
                                "mean_f": float(prior.log_tilt(z).mean())},
            "pi0_draws_mean_norm_z": math.sqrt(prior.Q)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", help="a checkpoint with a deep prior (part 2)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--ti-temps", type=int, default=40, help="thermodynamic integration rungs (part 2)")
    ap.add_argument("--ti-steps", type=int, default=400, help="ULA steps of η = 0.05 per rung (part 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    args = ap.parse_args()
    be = get_backend(args.device, "float64")
    out: dict[str, Any] = {"bench": "deep_logz", "Q": Q, "known_Z": known_z(be, args.seeds)}
    if args.ckpt:
        out["trained"] = trained(be, args.ckpt, args.seeds, args.ti_temps, args.ti_steps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
