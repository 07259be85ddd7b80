"""The prior part of the maximum-likelihood loss, shared by every objective (spec section 4).

For posterior samples z_i with weights a_i (Σ a_i = 1; self-normalised importance weights,
or 1/N for Langevin chains) the loss of every mode contains the prior's part

    − Σ_i a_i log p(z_i),   with ∇ log Z estimated or exact:

    contrastive divergence: ∇ log Z from fresh prior draws z' (``z_cd``);
    exact:                  quadrature log Z, differentiated.

Each prior writes its own form in ``prior_loss`` (``kaem/priors/``): for the univariate
prior − Σ a_i log p̃(z_i) + (1/S') Σ log p̃(z'_s) or + Σ log Z; the mixture's is derived in
``kaem/priors/mixture.py``.
"""
from __future__ import annotations

from typing import Any

from .model import KAEM


def prior_loss_and_grad(model: KAEM, z_post: Any, weight: Any, z_cd: Any = None,
                        exact_logZ: bool = False) -> Any:
    """The value of the prior's loss term; gradients accumulate into the prior's parameters.

    z_post: (N, *latent) posterior samples; weight: (N,) constants; z_cd: (S', *latent)
    fresh prior draws or None; exact_logZ: differentiate the quadrature log Z instead.
    """
    return model.prior.prior_loss(z_post, weight, z_cd=z_cd, exact_logZ=exact_logZ)
