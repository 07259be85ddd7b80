"""Evaluation that needs no downloads (method §6).

* Held-out log-likelihood by importance sampling from the prior:
      log p(x) ≈ logsumexp_s log N(x; out_act(G(h(z_s))), σ² I) − log S,   z_s ~ prior,
  Gaussian constant included, no injection noise. Its exponential is an unbiased
  estimate of p(x), so the log is a stochastic lower bound in expectation.
* The reference-compatible "test MSE": mean squared difference between freshly generated
  images and test images paired by index (a weak quality proxy, kept for comparability).
* A quadrature check: how much log Z changes when the Gauss–Legendre rule is doubled.
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

from kaem.nn.kan import fixed_parameters
from kaem.model import KAEM
from kaem.numerics import logsumexp


def eval_latents(model: KAEM, n: int, rng: Any, log_Z: float | None = None) -> tuple[Any, Any]:
    """n latents z with their log weights log π(z)/q(z) against the proposal q they came
    from: without ``log_Z``, the prior's own sampler (weight 0); with it (deep prior), π0
    draws weighted by f(z) − log Ẑ."""
    if log_Z is None:
        return model.sample_prior(n, rng), 0.0
    z = model.prior.sample_pi0(n, rng)
    return z, model.prior.log_tilt(z) - log_Z


def heldout_loglik(model: KAEM, x: Any, S: int, rng: Any, chunk: int = 500, log_Z: float | None = None) -> Any:
    """Per-datum estimate of log p(x_b); x (B, D) -> (B,) in nats.

    The S latents (``eval_latents``; ``log_Z``: importance sampling from π0 for the deep
    prior) are processed ``chunk`` at a time with a running logsumexp, so memory stays
    O(B·chunk) for S in the thousands.
    """
    xp = model.be.xp
    acc = xp.full((x.shape[0],), -xp.inf, dtype=x.dtype)
    for start in range(0, S, chunk):
        z, log_w = eval_latents(model, min(chunk, S - start), rng, log_Z)
        g = model.generator.forward(model.prior.to_input(z), cache=False)
        lp = model.lik.log_density_matrix(x, g) + log_w  # (B, chunk)
        acc = logsumexp(xp.stack([acc, logsumexp(lp, axis=1)], axis=1), axis=1)
    return acc - math.log(S)


def bits_per_dim(nats: float, D: int) -> float:
    """−log p(x) / (D · ln 2): the usual per-dimension figure (densities on [0,1] pixels, so
    it can be negative for a sharp model)."""
    return -nats / (D * math.log(2))


def generated_mse(model: KAEM, x: Any, rng: Any) -> Any:
    """Mean of (x_n − x̂_n)² over n and pixels, x̂_n freshly generated; x (N, D)."""
    xhat = model.generate(x.shape[0], rng)
    return ((x - xhat) ** 2).mean()


@fixed_parameters()
def evaluate(model: KAEM, x: Any, S: int, rng: Any, batch: int = 500,
             logZ_samples: int | None = None) -> dict[str, float]:
    """Held-out log-likelihood (nats/datum, bits/dim) and test MSE on x (N, D), and the
    check of the prior's normaliser, as floats: ``logZ_quad_err`` (max |Δ log Z| when the
    quadrature nodes double) for an exact prior; for the deep prior the importance-sampling
    estimate from π0, ``loglik_is_pi0_nats``, with ``logZ_is``, its standard error
    ``logZ_is_se`` and effective sample size ``logZ_is_ess`` from ``logZ_is_n`` =
    ``logZ_samples`` (default 10·S) π0 draws. Runs in eval mode."""
    prior, xp = model.prior, model.be.xp

    def loglik(log_Z: float | None = None) -> float:
        with model.evaluating():
            return float(xp.concatenate([heldout_loglik(model, x[i:i + batch], S, rng, log_Z=log_Z)
                                         for i in range(0, x.shape[0], batch)]).mean())

    nats = loglik()
    if prior.has_exact_logZ:
        check = {"logZ_quad_err": prior.quadrature_error()}
    else:
        est = prior.estimate_log_Z(logZ_samples or 10 * S, rng)
        check = {"loglik_is_pi0_nats": loglik(est["logZ"]), "logZ_is": est["logZ"], "logZ_is_se": est["se"],
                 "logZ_is_ess": est["ess"], "logZ_is_n": est["n"]}
    return {"loglik_nats": nats, "bits_per_dim": bits_per_dim(nats, model.D),
            "test_mse": float(generated_mse(model, x, rng)), "S": S, "sigma": model.lik.sigma, **check}
