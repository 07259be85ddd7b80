"""Held-out log-likelihood by annealed importance sampling (Neal 2001), for every prior.

For each test image x_b, AIS anneals C chains from the prior to the posterior,

    p_t(v | x_b) ∝ p_0(v) · p(x_b | z(v))^t,   t on a geometric or sigmoidal schedule of K steps,

in the latent space of the prior (:mod:`kaem.evaluation.paths`: ε-space for the univariate
and mixture priors, so that the estimate is of the model ``sample_prior`` + the generator
define; z-space from π0 for the deep prior), with Metropolis-adjusted Hamiltonian moves
whose step sizes come from a separate pilot run (:mod:`kaem.evaluation.anneal`: why that
keeps the weights valid), refresh moves that redraw one coordinate from the N(0, I) base
(they can jump between the modes of a posterior), and resampling of an image's chains
whenever their ESS falls below C/2. Per image

    log p̂(x_b) = log mean_c exp(w_{c,b}),

a stochastic lower bound of log p(x_b) (E[p̂] = p, so E[log p̂] ≤ log p), tight as K grows.
The report gives the mean over images, its standard error over images (the spread of
log p(x_b) across the test set, what comparing two models on the same images needs), the
Monte Carlo standard error of the mean (delta method over the chains, the estimator's own
noise) and the chains' effective sample size (Σw)²/Σw² per image.

Deep prior: log p(x_b) = log ∫ π0 e^f p(x_b|z) dz − log Z with Z = ∫ π0 e^f, both by AIS
from π0 (the second with ``logZ_chains`` chains and no data); log Ẑ is a lower bound too, so
the difference is not a bound either way. Its standard error adds to every image's.

Defaults (``bench/ais.py``; the default Fashion-MNIST model after 10 epochs, BDMC on 12
images simulated from it, the same images in every comparison): the geometric schedule (at
K = 300 its BDMC gap was a sixth of the sigmoidal one's); L = 5 leapfrog steps per
Hamiltonian move (on 5 images at K = 100 the gap fell from 154 nats with L = 1 to 7);
3 refresh moves per temperature and resampling at ESS < C/2, which at K = 1000, C = 16 take
the mean gap from 15.1 ± 6.7 to 5.6 ± 1.6 nats per image (the largest from 80 to 19) for
about 1.5 times the work; K = 1000. On 20 real test images AIS at K = 2000 then agrees with
K = 1000 (+0.9 ± 3.5 nats per image, paired). The defaults still do not make AIS exact on
such a model: the median gap is 4.7 nats, and 2 of the 12 images have a gap ≤ 1 nat
(docs/benchmarks.md: what more chains buy).
Cost: per temperature and chain, L generator forward + backward passes for the Hamiltonian
move, and ``refresh`` forward passes and one forward + backward for the refresh moves, for
each of the C + ``pilot_chains`` chains of an image: 12 ms per image and temperature on two
CPU cores (7.9 ms without the refresh moves), so K = 1000 takes about 12 s per image.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.backend import to_numpy
from kaem.evaluation.anneal import SCHEDULES, per_datum, pilot_and_run
from kaem.evaluation.anneal import schedule as make_schedule
from kaem.evaluation.paths import MIXTURE_PATHS, DeepPriorPath, ITSLatent, make_path
from kaem.nn.kan import fixed_parameters

DEFAULT_TEMPS = 1000
DEFAULT_CHAINS = 16
DEFAULT_SCHEDULE = "geometric"
DEFAULT_LEAPFROG = 5  # HMC: L leapfrog steps per move
DEFAULT_STEPS = 1  # moves per temperature
DEFAULT_REFRESH = 3  # refresh moves per temperature (moves.refresh_moves), where the base is N(0, I)
DEFAULT_RESAMPLE = 0.5  # resample an image's chains when their ESS falls below this fraction of C
DEFAULT_PILOT = 4  # pilot chains per image
DEFAULT_LOGZ_CHAINS = 2000  # deep prior: chains of the log Z run
MAX_CHAINS = 4096  # chains alive at once: images are processed in groups of MAX_CHAINS // C


def check_settings(temps: int, chains: int, schedule: str, n_leapfrog: int, steps_per_temp: int,
                   pilot_chains: int, mixture: str = "its", refresh: int = 0, resample_ess: float = 0.0) -> None:
    """Raise ValueError naming the first bad setting and its valid values."""
    for name, value in (("temps", temps), ("chains", chains), ("n_leapfrog", n_leapfrog),
                        ("steps_per_temp", steps_per_temp), ("pilot_chains", pilot_chains)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} = {value!r}: must be an integer >= 1")
    if isinstance(refresh, bool) or not isinstance(refresh, (int, np.integer)) or refresh < 0:
        raise ValueError(f"refresh = {refresh!r}: must be an integer >= 0")
    if isinstance(resample_ess, bool) or not isinstance(resample_ess, (int, float)) or not 0.0 <= resample_ess <= 1.0:
        raise ValueError(f"resample_ess = {resample_ess!r}: must be a fraction of the chains in [0, 1] (0: never)")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if mixture not in MIXTURE_PATHS:
        raise ValueError(f"unknown mixture path {mixture!r}; valid: {', '.join(MIXTURE_PATHS)}")


def summary(logp: Any, ess: Any, var: Any, C: int) -> dict[str, Any]:
    """Host values from per-image device arrays (B,) of log p̂, ESS and the delta-method
    variance of log p̂ (one read): mean, standard errors, ESS mean and minimum, lists."""
    logp, ess, var = (np.asarray(to_numpy(a), dtype=np.float64) for a in (logp, ess, var))
    n = logp.shape[0]
    se = float(logp.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"loglik_nats": float(logp.mean()), "loglik_se": se,
            "loglik_mc_se": float(math.sqrt(var.sum()) / n) if C > 1 else float("nan"),
            "ess": float(ess.mean()), "ess_min": float(ess.min()),
            "loglik_per_image": logp.tolist(), "ess_per_image": ess.tolist(), "n_images": n}


def ais_loglik(model: Any, x: Any, *, rng: Any, temps: int = DEFAULT_TEMPS, chains: int = DEFAULT_CHAINS,
               schedule: str = DEFAULT_SCHEDULE, n_leapfrog: int = DEFAULT_LEAPFROG,
               steps_per_temp: int = DEFAULT_STEPS, pilot_chains: int = DEFAULT_PILOT,
               logZ_chains: int = DEFAULT_LOGZ_CHAINS, mixture: str = "its",
               max_chains: int = MAX_CHAINS, refresh: int = DEFAULT_REFRESH,
               resample_ess: float = DEFAULT_RESAMPLE) -> dict[str, Any]:
    """log p(x_b) by AIS for every image of x (N, D) (on the model's device), in nats.

    Args:
        model: a KAEM (any prior, any generator); run in eval mode, parameters fixed.
        x: (N, D) images.
        rng: the device's random generator, the only source of randomness.
        temps: K, the number of annealing steps (K + 1 temperatures).
        chains: C, chains per image.
        schedule: "geometric" or "sigmoid" (``anneal.schedule``).
        n_leapfrog: L leapfrog steps per Hamiltonian move (1: MALA).
        steps_per_temp: moves per temperature.
        pilot_chains: chains per image of the step-size pilot (discarded).
        logZ_chains: deep prior only, chains of the log Z run.
        mixture: mixture prior only, "its" (ε-space, the sampler's model) or "density"
            (z-space, the pointwise density; ``paths.MixtureDensityPath``).
        max_chains: at most this many chains at once (images in groups of max_chains // C).
        refresh: refresh moves per temperature (``moves.refresh_moves``: one coordinate of
            the N(0, I) base redrawn, Metropolis-accepted).
        resample_ess: an image's chains are resampled (``anneal.resample``) whenever their
            ESS falls below this fraction of C (0: never); the estimate stays unbiased, and
            the reported ESS counts from the last resampling.
            The mixture's density path runs plain AIS, without refresh moves (its base is
            not N(0, I)) and without resampling (on the 2-D test model its per-image errors
            then spread 1.4 times wider than their standard errors say, over 12 seeds).

    Returns:
        host values: ``loglik_nats`` (mean over images), ``loglik_se`` (its standard error
        over images), ``loglik_mc_se`` (Monte Carlo standard error of the mean), ``ess``
        and ``ess_min`` (chains' effective sample size per image: mean, minimum),
        ``loglik_per_image``, ``ess_per_image``, ``acceptance`` (mean over the moves),
        ``bits_per_dim``, ``estimator`` = "ais" and the settings; for the deep prior also
        ``logZ``, ``logZ_se``, ``logZ_ess``, ``logZ_chains`` (the image values have log Ẑ
        subtracted; ``loglik_se`` and ``loglik_mc_se`` include ``logZ_se``, and
        ``loglik_se_images`` is the images' part alone).
    """
    check_settings(temps, chains, schedule, n_leapfrog, steps_per_temp, pilot_chains, mixture, refresh, resample_ess)
    xp = model.be.xp
    t = xp.asarray(make_schedule(temps, schedule), dtype=xp.float64)  # on the device once
    group = max(1, max_chains // chains)
    parts, acc = [], []
    with model.evaluating(), fixed_parameters():
        deep = model.prior.kind == "deep"
        full = 0 if mixture == "density" and model.prior.kind == "mixture" else 1  # 0: plain AIS (``resample_ess``)
        latent = None if deep or mixture == "density" else ITSLatent(model.prior)  # tables once
        for i in range(0, x.shape[0], group):
            path = make_path(model, x[i:i + group], mixture, latent)
            res = pilot_and_run(path, t, chains, rng, pilot_chains, steps_per_temp, n_leapfrog,
                                resample_ess=resample_ess * full, refresh=refresh * full)
            d = per_datum(res.w, chains, path.B, res.eve, res.n_resampled)
            parts.append((d["logp"], d["ess"], d["var"]))
            acc.append(res.acceptance[1:-1].mean() if temps > 1 else xp.zeros((), xp.float64))
        logp, ess, var = (xp.concatenate([p[j] for p in parts]) for j in range(3))
        extra: dict[str, Any] = {}
        if deep:
            extra = deep_prior_log_Z(model.prior, t, logZ_chains, rng, pilot_chains, steps_per_temp, n_leapfrog,
                                     refresh, resample_ess)
            logp = logp - extra.pop("logZ_dev")
    out = {**summary(logp, ess, var, chains), **extra}
    if deep:
        out["loglik_se_images"] = out["loglik_se"]
        out["loglik_se"] = math.hypot(out["loglik_se"], out["logZ_se"])
        out["loglik_mc_se"] = math.hypot(out["loglik_mc_se"], out["logZ_se"])
    out.update(estimator="ais", temps=temps, chains=chains, schedule=schedule, n_leapfrog=n_leapfrog,
               steps_per_temp=steps_per_temp, refresh=refresh * full, resample_ess=resample_ess * full,
               acceptance=float(to_numpy(xp.stack(acc).mean())),
               bits_per_dim=-out["loglik_nats"] / (x.shape[1] * math.log(2)))
    return out


def deep_prior_log_Z(prior: Any, t: Any, chains: int, rng: Any, pilot_chains: int = DEFAULT_PILOT,
                     steps_per_temp: int = DEFAULT_STEPS, n_leapfrog: int = DEFAULT_LEAPFROG,
                     refresh: int = DEFAULT_REFRESH, resample_ess: float = DEFAULT_RESAMPLE) -> dict[str, Any]:
    """The deep prior's log Z = log E_π0[e^f] by AIS from π0 to π0·e^f along the temperatures
    t (K + 1,), ``chains`` chains (the pilot: max(pilot_chains, 16)). Returns ``logZ``
    (host), ``logZ_se`` (delta method), ``logZ_ess``, ``logZ_chains`` and ``logZ_dev`` (the
    estimate as a 0-d device array)."""
    path = DeepPriorPath(prior)
    res = pilot_and_run(path, t, chains, rng, max(pilot_chains, 16), steps_per_temp, n_leapfrog,
                        resample_ess=resample_ess, refresh=refresh)
    d = per_datum(res.w, chains, 1, res.eve, res.n_resampled)
    ess, var = (float(to_numpy(d[k])[0]) for k in ("ess", "var"))
    return {"logZ": float(to_numpy(d["logp"])[0]), "logZ_se": math.sqrt(max(var, 0.0)), "logZ_ess": ess,
            "logZ_chains": chains, "logZ_dev": d["logp"][0]}


def ais_weights(path: Any, temps: int, chains: int, rng: Any, schedule: str = DEFAULT_SCHEDULE,
                n_leapfrog: int = DEFAULT_LEAPFROG, steps_per_temp: int = DEFAULT_STEPS,
                pilot_chains: int = DEFAULT_PILOT, refresh: int = 0, resample_ess: float = 0.0) -> dict[str, Any]:
    """Forward AIS on any path (:mod:`kaem.evaluation.anneal`): per-datum device arrays
    ``logp``, ``ess``, ``var`` (``anneal.per_datum``) and the run itself (``run``)."""
    res = pilot_and_run(path, make_schedule(temps, schedule), chains, rng, pilot_chains, steps_per_temp,
                        n_leapfrog, resample_ess=resample_ess, refresh=refresh)
    return {**per_datum(res.w, chains, path.B, res.eve, res.n_resampled), "run": res}


__all__ = ["DEFAULT_CHAINS", "DEFAULT_LEAPFROG", "DEFAULT_REFRESH", "DEFAULT_SCHEDULE", "DEFAULT_TEMPS", "ais_loglik", "ais_weights",
           "deep_prior_log_Z"]
