"""Evaluation that needs no downloads (method §6).

* Held-out log-likelihood by importance sampling from the prior:
      log p(x) ≈ logsumexp_s log N(x; out_act(G(h(z_s))), σ² I) − log S,   z_s ~ prior,
  Gaussian constant included, no injection noise. Its exponential is an unbiased
  estimate of p(x), so the log is a stochastic lower bound in expectation, whose looseness
  depends on S and on how far each posterior sits from the prior.
* Its uncertainty: the standard error of the mean over images, and per image the effective
  sample size (Σw)²/Σw² of the S weights (a handful: the bound is loose, raise S or use
  AIS, ``kaem/evaluation/ais.py``).
* The reference-compatible "test MSE": mean squared difference between freshly generated
  images and test images paired by index (a weak quality proxy, kept for comparability).
* A quadrature check: how much log Z changes when the rule is refined, max and summed over
  the prior's functions, flagged against the standard error (``report.py``).
* For the deep prior (π ∝ exp(f)·π0, no exact sampler, no tractable Z) two estimates:
  - the same formula with z_s from its own sampler (prior Langevin): the log-likelihood of
    the generative model that ``sample`` draws from (the sampler's law, which is π up to
    ULA's discretisation and short-run bias); this is ``loglik_nats``;
  - importance sampling from π0, exact in expectation for π itself:
        log p(x) ≈ logsumexp_s [log N(x; ...) + f(z_s)] − log S − log Ẑ,   z_s ~ π0,
    with log Ẑ = log mean exp f(z'), z' ~ π0 (a separate, larger set), its standard error
    and effective sample size. Reliable only while π stays close to π0: once training
    moves π's mass where π0 has almost none, no feasible number of π0 draws reaches it and
    both log Ẑ and this estimate collapse (README, "Deep prior").
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.backend import to_numpy
from kaem.evaluation.report import normaliser_check
from kaem.model import KAEM
from kaem.nn.kan import fixed_parameters
from kaem.numerics import logsumexp


def eval_latents(model: KAEM, n: int, rng: Any, log_Z: float | None = None) -> tuple[Any, Any]:
    """n latents z with their log weights log π(z)/q(z) against the proposal q they came
    from: without ``log_Z``, the prior's own sampler (weight 0); with it (deep prior), π0
    draws weighted by f(z) − log Ẑ."""
    if log_Z is None:
        return model.sample_prior(n, rng), 0.0
    z = model.prior.sample_pi0(n, rng)
    return z, model.prior.log_tilt(z) - log_Z


def heldout_is(model: KAEM, x: Any, S: int, rng: Any, chunk: int = 500,
               log_Z: float | None = None) -> tuple[Any, Any]:
    """Per-datum estimate of log p(x_b) and the effective sample size of its weights w_s =
    log p(x_b | z_s) + log π(z_s)/q(z_s); x (B, D) -> both (B,): log p̂ = logsumexp_s w − log S
    in nats, ESS = exp(2·logsumexp_s w − logsumexp_s 2w) in [1, S].

    The S latents (``eval_latents``; ``log_Z``: importance sampling from π0 for the deep
    prior) are processed ``chunk`` at a time with running logsumexps of w and 2w, so memory
    stays O(B·chunk) for S in the thousands.
    """
    xp = model.be.xp
    acc = xp.full((2, x.shape[0]), -xp.inf, dtype=x.dtype)
    for start in range(0, S, chunk):
        z, log_w = eval_latents(model, min(chunk, S - start), rng, log_Z)
        g = model.generator.forward(model.prior.to_input(z), cache=False)
        lp = model.lik.log_density_matrix(x, g) + log_w  # (B, chunk)
        new = xp.stack([logsumexp(lp, axis=1), logsumexp(2 * lp, axis=1)])
        acc = logsumexp(xp.stack([acc, new]), axis=0)
    return acc[0] - math.log(S), xp.exp(2 * acc[0] - acc[1])


def heldout_loglik(model: KAEM, x: Any, S: int, rng: Any, chunk: int = 500, log_Z: float | None = None) -> Any:
    """Per-datum estimate of log p(x_b); x (B, D) -> (B,) in nats (``heldout_is``)."""
    return heldout_is(model, x, S, rng, chunk, log_Z)[0]


def bits_per_dim(nats: float, D: int) -> float:
    """−log p(x) / (D · ln 2): the usual per-dimension figure (densities on [0,1] pixels, so
    it can be negative for a sharp model)."""
    return -nats / (D * math.log(2))


def generated_mse(model: KAEM, x: Any, rng: Any) -> Any:
    """Mean of (x_n − x̂_n)² over n and pixels, x̂_n freshly generated; x (N, D)."""
    xhat = model.generate(x.shape[0], rng)
    return ((x - xhat) ** 2).mean()


def summary(logp: Any, ess: Any, S: int) -> dict[str, Any]:
    """Host values from the per-image device arrays (N,) of log p̂ and ESS (one read each):
    ``loglik_nats`` (mean), ``loglik_se`` (its standard error over images), ``loglik_mc_se``
    (the Monte Carlo standard error of the mean: the delta method, Var(log p̂_b) ≈
    (S/ESS_b − 1)/(S − 1)), ``ess`` and ``ess_min``, and the lists ``loglik_per_image`` and
    ``ess_per_image``."""
    logp, ess = (np.asarray(to_numpy(a), dtype=np.float64) for a in (logp, ess))
    n = logp.shape[0]
    var = (S / ess - 1) / (S - 1) if S > 1 else np.full(n, np.nan)
    return {"loglik_nats": float(logp.mean()),
            "loglik_se": float(logp.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
            "loglik_mc_se": float(math.sqrt(max(var.sum(), 0.0)) / n), "ess": float(ess.mean()),
            "ess_min": float(ess.min()), "loglik_per_image": logp.tolist(), "ess_per_image": ess.tolist()}


@fixed_parameters()
def evaluate(model: KAEM, x: Any, S: int, rng: Any, batch: int = 500,
             logZ_samples: int | None = None) -> dict[str, Any]:
    """Held-out log-likelihood on x (N, D) by importance sampling from the prior with S
    samples, as host values: ``loglik_nats`` (mean over images), ``bits_per_dim``,
    ``loglik_se``, ``loglik_mc_se``, ``ess``, ``ess_min`` (``summary``), ``test_mse``,
    ``estimator`` = "is", ``S``, σ; and the check of the prior's normaliser
    (``report.normaliser_check``: ``logZ_quad_err``, ``logZ_quad_err_sum`` for a quadrature
    prior, ``logZ_err_flag``). For the deep prior also the importance-sampling estimate from
    π0, ``loglik_is_pi0_nats``, with ``logZ_is``, its standard error ``logZ_is_se`` and
    effective sample size ``logZ_is_ess`` from ``logZ_is_n`` = ``logZ_samples`` (default
    10·S) π0 draws. Runs in eval mode."""
    prior, xp = model.prior, model.be.xp

    def loglik(log_Z: float | None = None) -> tuple[Any, Any]:
        with model.evaluating():
            parts = [heldout_is(model, x[i:i + batch], S, rng, log_Z=log_Z) for i in range(0, x.shape[0], batch)]
        return xp.concatenate([p[0] for p in parts]), xp.concatenate([p[1] for p in parts])

    res = summary(*loglik(), S)
    if not prior.has_exact_logZ:
        est = prior.estimate_log_Z(logZ_samples or 10 * S, rng)
        res.update(loglik_is_pi0_nats=float(loglik(est["logZ"])[0].mean()), logZ_is=est["logZ"],
                   logZ_is_se=est["se"], logZ_is_ess=est["ess"], logZ_is_n=est["n"])
    res.update(normaliser_check(prior, res))
    return {**res, "bits_per_dim": bits_per_dim(res["loglik_nats"], model.D),
            "test_mse": float(generated_mse(model, x, rng)), "estimator": "is", "S": S, "sigma": model.lik.sigma}
