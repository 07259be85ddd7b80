"""Evaluation that needs no downloads (spec section 6).

* Held-out log-likelihood by importance sampling from the prior:
      log p(x) ≈ logsumexp_s log N(x; out_act(G(h(z_s))), σ² I) − log S,   z_s ~ prior,
  Gaussian constant included, no injection noise. Its exponential is an unbiased
  estimate of p(x), so the log is a stochastic lower bound in expectation.
* The reference-compatible "test MSE": mean squared difference between freshly generated
  images and test images paired by index (a weak quality proxy, kept for comparability).
* A quadrature check: how much log Z changes when the Gauss–Legendre rule is doubled.
"""
from __future__ import annotations

import math
from typing import Any

from .kan import fixed_parameters
from .model import KAEM
from .numerics import logsumexp


def heldout_loglik(model: KAEM, x: Any, S: int, rng: Any, chunk: int = 500) -> Any:
    """Per-datum estimate of log p(x_b); x (B, D) -> (B,) in nats.

    The S prior samples are processed ``chunk`` at a time with a running logsumexp, so
    memory stays O(B·chunk) for S in the thousands.
    """
    xp = model.be.xp
    acc = xp.full((x.shape[0],), -xp.inf, dtype=x.dtype)
    for start in range(0, S, chunk):
        z = model.sample_prior(min(chunk, S - start), rng)
        g = model.generator.forward(model.prior.to_input(z), cache=False)
        lp = model.lik.log_density_matrix(x, g)  # (B, chunk)
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
def evaluate(model: KAEM, x: Any, S: int, rng: Any, batch: int = 500) -> dict[str, float]:
    """Held-out log-likelihood (nats/datum, bits/dim), test MSE on x (N, D) and the prior's
    quadrature error (max |Δ log Z| when the node count doubles), as floats. Runs in eval mode."""
    with model.evaluating():
        ll = model.be.xp.concatenate([heldout_loglik(model, x[i:i + batch], S, rng)
                                      for i in range(0, x.shape[0], batch)])
    nats = float(ll.mean())
    return {"loglik_nats": nats, "bits_per_dim": bits_per_dim(nats, model.D),
            "test_mse": float(generated_mse(model, x, rng)), "S": S, "sigma": model.lik.sigma,
            "logZ_quad_err": model.prior.quadrature_error()}
