"""Latent priors (spec sections 1.1–1.3), one module each, chosen by the config.

=============  ==========================================  =================================
name           what                                        module
=============  ==========================================  =================================
univariate     Q×P univariate EBMs, exact inverse transform ``univariate.py`` (§1.1, §3)
=============  ==========================================  =================================

Every prior offers the same interface to the model, the objectives and the samplers
(z is a batch of latents, shape (N, *latent_shape)):

* ``Q`` (the generator's input width) and ``latent_shape``;
* ``params`` / ``grads`` / ``buffers``: flat name -> array dicts (the live arrays), and
  ``zero_grad()``;
* ``sample(n, rng)`` -> z;
* ``log_unnorm(z, cache)`` -> log p̃(z) (N,), ``log_unnorm_backward(dlogp, need_dz)`` -> dz
  (parameter gradients accumulate), and ``log_unnorm_and_grad(z)`` -> (log p̃, ∇_z log p̃)
  without parameter gradients (what samplers call);
* ``has_exact_logZ``; when true, ``log_Z(cache)``, ``log_Z_backward(dlogZ)``,
  ``quadrature_error()`` and ``log_prob(z)``;
* ``to_input(z)`` -> generator input h (N, Q) and its backward ``input_grad(dh)`` -> dz;
* ``update_grid(z, ratio)`` -> whether grid updating (spec 2.1) moved anything.
"""
from __future__ import annotations

from typing import Any, Callable

from ..backend import Backend
from .univariate import UnivariatePrior

# name -> constructor from (config, backend, rng)
PRIORS: dict[str, Callable[[Any, Backend, Any], Any]] = {
    "univariate": UnivariatePrior.from_config,
}


def prior_kind(cfg: Any) -> str:
    """The prior a config selects."""
    return "univariate"


def make_prior(cfg: Any, be: Backend, rng: Any) -> Any:
    """Build the prior the config selects (parameters drawn from ``rng``)."""
    return PRIORS[prior_kind(cfg)](cfg, be, rng)


__all__ = ["PRIORS", "UnivariatePrior", "make_prior", "prior_kind"]
