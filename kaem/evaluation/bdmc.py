"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015; Wu et al. 2017): a sandwich
of log p(x) on data simulated from the model itself.

Simulate (v*, x) from the joint: v* from the path's exact base sampler, z* = z(v*) (the
latent ``sample_prior`` would give), x = out_act(G(h(z*))) + σ·ξ. Then v* is an exact draw
from the posterior p_1(v | x), and

* forward AIS (t: 0 → 1, chains from the base) gives log p̂_fwd, with E[log p̂_fwd] ≤ log p(x):
  a stochastic lower bound;
* reverse AIS (t: 1 → 0, every chain started at v*) gives exp(w_rev) with E[exp w_rev] =
  Z_0/Z_1 = 1/p(x), so log p̂_rev = −log mean_c exp(w_rev,c) has E[log p̂_rev] ≥ log p(x):
  a stochastic upper bound.

The gap upper − lower bounds the forward estimate's error on such data (for the same K,
chains and kernels). Both directions use the same kernels: one step table from a pilot
on separate forward chains, read in reverse for the reverse run (each kernel leaves its
own p_{t_k} invariant whichever way the temperatures are visited).

Only for paths whose base sampler is exact (``exact_base``): the ε-space path of the
univariate and mixture priors. The deep prior has no exact prior sampler (its draws are
short-run Langevin), so no exact posterior draw to start the reverse chains from.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.backend import array_module, to_numpy
from kaem.evaluation.ais import (DEFAULT_CHAINS, DEFAULT_LEAPFROG, DEFAULT_PILOT, DEFAULT_REFRESH, DEFAULT_RESAMPLE,
                                 DEFAULT_SCHEDULE, DEFAULT_STEPS, DEFAULT_TEMPS, check_settings)
from kaem.evaluation.anneal import DEFAULT_MASS, anneal, per_datum, pilot_and_run
from kaem.evaluation.anneal import schedule as make_schedule
from kaem.evaluation.paths import ITSLatent, ITSPath
from kaem.likelihood.gaussian import apply_output_activation
from kaem.nn.kan import fixed_parameters


def bidirectional(path: Any, v_star: Any, temps: Any, C: int, rng: Any, pilot_chains: int = DEFAULT_PILOT,
                  n_steps: int = DEFAULT_STEPS, n_leapfrog: int = DEFAULT_LEAPFROG,
                  mass: str = DEFAULT_MASS, resample_ess: float = 0.0, spread: float = 0.0,
                  refresh: int = 0) -> dict[str, Any]:
    """Forward and reverse AIS on ``path`` whose data were simulated with the latents
    v_star (B, *latent) (an exact posterior draw per datum), along temps (K + 1,) (host).

    Returns per-datum device arrays (B,): ``lower`` (forward log p̂), ``upper`` (reverse
    log p̂), and the forward run's ``ess``; and ``steps``, the shared step table.
    """
    xp = array_module(v_star)
    t = xp.asarray(temps, dtype=xp.float64)
    B = path.B
    run = pilot_and_run(path, t, C, rng, pilot_chains, n_steps, n_leapfrog, mass, resample_ess, spread, refresh)
    kern, fwd = run.kernels, per_datum(run.w, C, B)
    start = xp.tile(v_star, (C,) + (1,) * (v_star.ndim - 1))  # chain c·B + b starts at v*_b
    rev = per_datum(anneal(path, start, t[::-1], C, rng, kern.reversed(), n_steps, n_leapfrog,
                           resample_ess=resample_ess, step_spread=spread, refresh=refresh).w, C, B)
    return {"lower": fwd["logp"], "upper": -rev["logp"], "ess": fwd["ess"], "steps": kern.steps, "kernels": kern}


def simulate(model: Any, n: int, rng: Any, latent: ITSLatent | None = None) -> tuple[Any, Any]:
    """n data from the model: ε* ~ N(0, I), z* = T(Φ(ε*)) (the prior's inverse transform, the
    law of ``sample_prior``), x = out_act(G(h(z*))) + σ ξ. Returns x (n, D) and ε*."""
    latent = latent if latent is not None else ITSLatent(model.prior)
    eps = rng.standard_normal((n,) + latent.eps_shape, dtype=model.be.dtype)
    g = model.generator.forward(model.prior.to_input(latent.forward(eps)[0]), cache=False)
    y = apply_output_activation(model.lik.out_act, g)
    return y + model.lik.sigma * rng.standard_normal(y.shape, dtype=y.dtype), eps


def _mean_se(a: np.ndarray) -> tuple[float, float]:
    n = a.shape[0]
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def bdmc(model: Any, n: int, *, rng: Any, temps: int = DEFAULT_TEMPS, chains: int = DEFAULT_CHAINS,
         schedule: str = DEFAULT_SCHEDULE, n_leapfrog: int = DEFAULT_LEAPFROG, steps_per_temp: int = DEFAULT_STEPS,
         pilot_chains: int = DEFAULT_PILOT, max_chains: int = 4096, refresh: int = DEFAULT_REFRESH,
         resample_ess: float = DEFAULT_RESAMPLE) -> dict[str, Any]:
    """BDMC on n images simulated from ``model`` (module docstring), with the AIS settings of
    :func:`kaem.evaluation.ais.ais_loglik`.

    Returns host values: ``bdmc_lower_nats``, ``bdmc_upper_nats`` and ``bdmc_gap_nats``
    (per image, averaged), each with its standard error over images (``*_se``), the
    per-image lists ``bdmc_lower_per_image`` / ``bdmc_upper_per_image``, the forward ESS,
    and the settings. Raises ValueError for the deep prior (no exact prior sampler).
    """
    check_settings(temps, chains, schedule, n_leapfrog, steps_per_temp, pilot_chains, refresh=refresh,
                   resample_ess=resample_ess)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"bdmc images n = {n!r}: must be an integer >= 1")
    if model.prior.kind not in ("univariate", "mixture"):
        raise ValueError(f"BDMC needs exact prior draws: prior {model.prior.kind!r} has none; "
                         "valid: univariate, mixture")
    xp = model.be.xp
    t = make_schedule(temps, schedule)
    group = max(1, max_chains // chains)
    lows, ups, esss = [], [], []
    with model.evaluating(), fixed_parameters():
        latent = ITSLatent(model.prior)
        for i in range(0, n, group):
            x, eps = simulate(model, min(group, n - i), rng, latent)
            r = bidirectional(ITSPath(model, x, latent), eps, t, chains, rng, pilot_chains, steps_per_temp,
                              n_leapfrog, resample_ess=resample_ess, refresh=refresh)
            lows.append(r["lower"]), ups.append(r["upper"]), esss.append(r["ess"])
    lo, up, ess = (np.asarray(to_numpy(xp.concatenate(a)), dtype=np.float64) for a in (lows, ups, esss))
    (lm, ls), (um, us), (gm, gs) = _mean_se(lo), _mean_se(up), _mean_se(up - lo)
    return {"bdmc_lower_nats": lm, "bdmc_lower_se": ls, "bdmc_upper_nats": um, "bdmc_upper_se": us,
            "bdmc_gap_nats": gm, "bdmc_gap_se": gs, "bdmc_n": n, "bdmc_ess": float(ess.mean()),
            "bdmc_lower_per_image": lo.tolist(), "bdmc_upper_per_image": up.tolist(),
            "temps": temps, "chains": chains, "schedule": schedule, "n_leapfrog": n_leapfrog,
            "steps_per_temp": steps_per_temp, "refresh": refresh, "resample_ess": resample_ess}
