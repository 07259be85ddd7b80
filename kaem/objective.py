"""The prior part of the maximum-likelihood loss, shared by every objective (spec section 4).

For posterior samples z_i with weights a_i (Σ a_i = 1; self-normalised importance weights,
or 1/N for Langevin chains) the loss of every mode contains

    − Σ_i a_i log p̃(z_i)  +  prior term,

    prior term = (1/S') Σ_s' log p̃(z'_s')    contrastive divergence, z' fresh prior draws
               = Σ_{q,p} log Z_{q,p}         exact: quadrature log Z, differentiated

whose gradient is −E_post[∇ log p(z)] with ∇ log Z estimated or exact.
"""
from __future__ import annotations

from typing import Any

from .model import KAEM


def prior_loss_and_grad(model: KAEM, z_post: Any, weight: Any, z_cd: Any = None,
                        exact_logZ: bool = False) -> Any:
    """The value of − Σ_i weight_i log p̃(z_post_i) + prior term; gradients accumulate into
    the prior's parameters.

    z_post: (N, Q, P) posterior samples; weight: (N,) constants; z_cd: (S', Q, P) fresh
    prior draws or None; exact_logZ: add Σ log Z instead (or as well).
    """
    xp = model.be.xp
    n = z_post.shape[0]
    zz = z_post if z_cd is None else xp.concatenate([z_post, z_cd])
    logp = model.prior.log_unnorm(zz)  # one forward over both sets
    loss = -(weight * logp[:n]).sum()
    dlogp = -weight
    if z_cd is not None:
        loss = loss + logp[n:].mean()
        dlogp = xp.concatenate([dlogp, xp.full(z_cd.shape[0], 1.0 / z_cd.shape[0], dtype=dlogp.dtype)])
    model.prior.log_unnorm_backward(dlogp, need_dz=False)
    if exact_logZ:
        logZ = model.prior.log_Z()
        loss = loss + logZ.sum()
        model.prior.log_Z_backward(xp.ones_like(logZ))
    return loss
