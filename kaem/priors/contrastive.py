"""The prior loss of a prior whose log density is one unnormalised function (method §4):

    L = − Σ_i a_i log p̃(z_i)  +  (Σ_i a_i) (1/S') Σ_s log p̃(z'_s),

z_i posterior samples with constant weights a_i (Σ a_i = 1), z'_s fresh prior draws. Since
∇ log Z = E_π[∇ log p̃], the second term's gradient is a Monte Carlo estimate of ∇ log Z.
It carries the factor Σ_i a_i = 1 so that the loss is linear in the weights: a process that
holds some of the posterior samples (``kaem/parallel``) adds its share of every term, and
the shares sum to the whole.
the contrastive-divergence form shared by the univariate prior (which may add the exact
quadrature log Z instead) and the deep prior (which has no other). The mixture prior's
form differs (``mixture.py``).
"""
from __future__ import annotations

from typing import Any

from kaem.backend import array_module


def contrastive_weights(z_post: Any, weight: Any, z_cd: Any = None) -> tuple[Any, Any]:
    """The loss above as one weighted sum L = Σ_n d_n log p̃(z_n): z = [z_post; z_cd] and
    d = [−weight; (Σ weight)/S' each]. z_post (N, *latent), weight (N,), z_cd (S', *latent)
    or None -> z (N + S', *latent), d (N + S',)."""
    if z_cd is None:
        return z_post, -weight
    xp = array_module(z_post)
    S = z_cd.shape[0]
    return xp.concatenate([z_post, z_cd]), xp.concatenate([-weight, xp.full(S, 1.0 / S, dtype=weight.dtype) * weight.sum()])


def unnorm_prior_loss(prior: Any, z_post: Any, weight: Any, z_cd: Any = None) -> Any:
    """− Σ_i weight_i log p̃(z_post_i) (+ the mean of log p̃ over z_cd when given), with one
    forward over both sets; parameter gradients accumulate into ``prior.grads``.

    z_post (N, *latent), weight (N,), z_cd (S', *latent) or None. Returns the value (0-d).
    """
    z, d = contrastive_weights(z_post, weight, z_cd)
    logp = prior.log_unnorm(z)
    prior.log_unnorm_backward(d, need_dz=False)
    return d @ logp
