"""Latent priors (method §1.1–1.3), one module each, chosen by the config.

=============  ==========================================  =================================
name           what                                        module
=============  ==========================================  =================================
univariate     Q×P univariate EBMs, exact inverse transform ``univariate.py`` (§1.1, §3)
mixture        Q mixtures of P univariate EBMs, h = z       ``mixture.py`` (§1.2)
deep           one energy over z ∈ R^Q (Pang et al. 2020),  ``deep.py`` (§1.3)
               KAN or MLP body, prior Langevin sampling
=============  ==========================================  =================================

The univariate and mixture priors are built on ``quadrature.py`` (π0 from ``pi0.py``): the
densities of a KAN layer used pointwise, normalised by quadrature, with inverse-transform
tables and grid updating. The deep prior reuses a generator network stack as its energy
and the samplers for its draws; ``contrastive.py`` holds the contrastive-divergence prior
loss it shares with the univariate prior, ``vector_latent.py`` the h = z input map it
shares with the mixture.

Every prior offers the same interface to the model, the objectives and the samplers
(z is a batch of latents, shape (N, *latent_shape)):

* ``kind`` (its name in ``PRIORS``), ``Q`` (the generator's input width) and ``latent_shape``;
* ``params`` / ``grads`` / ``buffers``: flat name -> array dicts (the live arrays), and
  ``zero_grad()``;
* ``sample(n, rng)`` -> z;
* ``prior_loss(z_post, weight, z_cd, exact_logZ)`` -> the prior's part of every objective,
  − Σ_i weight_i log p(z_post_i) with ∇ log Z by contrastive divergence from the prior draws
  z_cd or exact (``kaem/objective.py``); parameter gradients accumulate;
* ``sampler_log_density()`` -> a function z -> (log p̃(z) (N,), ∇_z log p̃(z)) for one sampler
  run (parameters fixed meanwhile, so z-independent work such as the mixture's log Z is
  done once), no parameter gradients;
* ``log_unnorm(z, cache)`` -> log p̃(z) (N,) (up to a z-independent constant),
  ``log_unnorm_backward(dlogp, need_dz)`` -> dz (parameter gradients accumulate), and
  ``log_unnorm_and_grad(z)`` -> (log p̃, ∇_z log p̃);
* ``has_exact_logZ``; when true, ``log_Z(cache)``, ``log_Z_backward(dlogZ)``,
  ``quadrature_error()``, ``quadrature_error_sum()`` and ``log_prob(z)``, and ``sample`` is exact;
  when false (the deep prior), training must use the contrastive-divergence prior term and evaluation
  weighs π0 draws: ``sample_pi0(n, rng)``, ``log_tilt(z)`` = log p̃(z) − log π0(z) and
  ``estimate_log_Z(n, rng)`` (importance sampling from π0, with its standard error);
* ``to_input(z)`` -> generator input h (N, Q) and its backward ``input_grad(dh)`` -> dz;
* ``update_grid(z, ratio)`` -> whether grid updating (method §2.1) moved anything.
"""
from __future__ import annotations

from kaem.priors.deep import DeepPrior
from kaem.priors.mixture import MixturePrior
from kaem.priors.univariate import UnivariatePrior

# name -> class; ``kaem/build.py`` chooses one and builds it from the config
PRIORS: dict[str, type] = {"univariate": UnivariatePrior, "mixture": MixturePrior, "deep": DeepPrior}

__all__ = ["PRIORS", "DeepPrior", "MixturePrior", "UnivariatePrior"]
