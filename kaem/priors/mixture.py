"""The mixture prior (method §1.2), selected by ``MixtureModel.use_mixture_prior``.

Each latent coordinate q = 1..Q has its own mixture of P normalised univariate EBMs,

    π_q(z) = Σ_p α_{q,p} π_{q,p}(z),   π_{q,p}(z) = exp(f_{q,p}(z)) π0_p(z) / Z_{q,p},
    α_q = softmax(logits_q)   (uniform 1/P unless ``MixtureModel.train_proportions``),

the prior of z ∈ R^Q is Π_q π_q(z_q), and the generator input is h = z. The f_{q,p} are the
functions of one KAN layer with in = Q, out = P used pointwise (component p of coordinate
q reads z_q); Z_{q,p} comes from the quadrature shared with the univariate prior
(``kaem/priors/quadrature.py``) on input q's interval. The components are normalised:
the reference leaves Z_{q,p} out or takes the log of a product (method §7.8), which turns
the proportions into α_{q,p}·Z_{q,p}.

Log density. With a_{q,p}(z) = log α_{q,p} + e_{q,p}(z_q) − log Z_{q,p} and the energy
e_{q,p} = f_{q,p} + log(π0_p + ε),

    log π(z) = Σ_q logsumexp_p a_{q,p}(z),     r_{q,p}(z) = softmax_p a_{q,p}(z)  (responsibilities),
    ∂ log π(z)/∂θ            = Σ_{q,p} r_{q,p}(z) (∂_θ e_{q,p}(z_q) − ∂_θ log Z_{q,p}),
    ∂ log π(z)/∂logit_{q,p}  = r_{q,p}(z) − α_{q,p},
    ∂ log π(z)/∂z_q          = Σ_p r_{q,p}(z) e'_{q,p}(z_q),

θ any parameter of the energies (KAN coefficients, τ, learnable π0's μ_p and log σ_p).

Prior loss (the prior's part of every objective, method §4): L = − Σ_i a_i log π(z_i) for
posterior samples z_i with constant weights a_i (Σ a_i = 1). Its log Z part of the
gradient is + Σ_{q,p} r̄_{q,p} ∂ log Z_{q,p}, r̄_{q,p} = Σ_i a_i r_{q,p}(z_i) the posterior's
mean responsibilities, and ∂ log Z_{q,p} = E_{π_{q,p}}[∂e_{q,p}]:

* exact (``contrastive_divergence_training = false``): quadrature log Z, differentiated.
* contrastive divergence: E_{π_{q,p}}[∂e_{q,p}] from S' fresh prior draws z'_s ~ π. The
  draws' coordinate q comes from the mixture π_q, not from component p, so each is
  reweighted by π_{q,p}(z')/π_q(z') = r_{q,p}(z')/α_{q,p}:
      E_{π_q}[(r_{q,p}/α_{q,p}) g] = ∫ π_q · α_{q,p}π_{q,p}/π_q · g / α_{q,p} = E_{π_{q,p}}[g]
  (a Rao–Blackwellised weight, bounded by 1/α_{q,p}; no component labels needed). The CD
  gradient is
      − Σ_i a_i Σ_{q,p} r_{q,p}(z_i) ∂e_{q,p}(z_{i,q})
      + Σ_{q,p} r̄_{q,p} (1/S') Σ_s (r_{q,p}(z'_s)/α_{q,p}) ∂e_{q,p}(z'_{s,q})   (+ the exact logits term),
  an unbiased estimate of the exact gradient. The univariate prior's form, "posterior minus
  prior of the same log density", would weight ∂ log Z_{q,p} by α_{q,p} instead of r̄_{q,p}:
  right only when the posterior's mean responsibilities equal the proportions.
  The responsibilities need the values Z_{q,p}; the CD form only avoids differentiating
  them. The loss value is − Σ a_i log π(z_i) in both forms.

Sampling: component p ~ Categorical(α_q) for every (sample, q), then inverse transform
from π_{q,p} on the shared quadrature CDF tables: one vectorised pass. ``shared_uniform``
does not apply (every (sample, q) has its own uniform).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from kaem.backend import Backend
from kaem.nn.kan import KANSpec
from kaem.numerics import logsumexp, rowwise_interp
from kaem.priors.quadrature import QuadratureDensities
from kaem.priors.vector_latent import VectorLatent


class MixturePrior(VectorLatent, QuadratureDensities):
    """Q mixtures of P normalised univariate EBMs; latents z (N, Q), generator input h = z.

    Parameters: the layer's and π0's (see ``QuadratureDensities``; learnable π0 parameters
    per component, shape (P, 1)) and ``logits`` (Q, P) when the proportions are trained.
    Buffers: the layer's and ``domain`` (Q, 2). Internally the densities are laid out as
    the layer's (·, P, Q).
    """

    kind = "mixture"

    def __init__(self, be: Backend, P: int, Q: int, spec: KANSpec, rng: Any, pi0: str = "ebm",
                 n_nodes: int = 100, eps: float = 1e-4, quadrature: str = "gausslegendre",
                 train_proportions: bool = False) -> None:
        super().__init__(be, Q, P, spec, rng, pi0=pi0, pi0_shape=(P, 1), n_nodes=n_nodes, eps=eps,
                         quadrature=quadrature)
        self.P, self.Q, self.train_proportions = P, Q, train_proportions
        self.mix_params = {"logits": be.zeros((Q, P))} if train_proportions else {}  # start uniform
        self.mix_grads = {k: be.xp.zeros_like(v) for k, v in self.mix_params.items()}

    # ---- what the model, the optimiser and checkpoints see ---------------------------------
    @property
    def params(self) -> dict:
        return {**super().params, **self.mix_params}

    @property
    def grads(self) -> dict:
        return {**super().grads, **self.mix_grads}

    def zero_grad(self) -> None:
        super().zero_grad()
        for g in self.mix_grads.values():
            g[...] = 0

    def update_grid(self, z: Any, ratio: float) -> bool:
        """Grid updating (method §2.1) on posterior samples z (N, Q): input q's grid and all P
        components of coordinate q are fitted to z[:, q]. Returns whether it moved."""
        N = z.shape[0]
        return self.update_layer_grid(self.be.xp.broadcast_to(z[:, None, :], (N, self.P, self.Q)), ratio)

    # ---- proportions ------------------------------------------------------------------------
    def log_alpha(self) -> Any:
        """log α laid out as the densities, (P, Q)."""
        xp = self.be.xp
        if not self.train_proportions:
            return xp.full((self.P, self.Q), -math.log(self.P), dtype=self.be.dtype)
        lg = self.mix_params["logits"]
        return (lg - logsumexp(lg, axis=1)[:, None]).T

    def alpha(self) -> Any:
        """The proportions α (Q, P); rows sum to 1."""
        return self.be.xp.exp(self.log_alpha()).T

    # ---- log density ------------------------------------------------------------------------
    def _mix(self, e: Any, log_Z: Any) -> tuple[Any, Any]:
        """log π(z) (N,) and responsibilities r (N, P, Q) from energies e (N, P, Q)."""
        a = e + (self.log_alpha() - log_Z)[None]
        lse = logsumexp(a, axis=1)  # (N, Q)
        return lse.sum(axis=1), self.be.xp.exp(a - lse[:, None, :])

    def log_prob(self, z: Any) -> Any:
        """log π(z) = Σ_q log Σ_p α_{q,p} π_{q,p}(z_q);  z (N, Q) -> (N,)."""
        return self._mix(self.log_energy(z[:, None, :], cache=False), self.log_Z(cache=False))[0]

    def sampler_log_density(self) -> Callable[[Any], tuple[Any, Any]]:
        """z (N, Q) -> (log π(z) (N,), ∇_z log π(z) (N, Q)) with log Z computed once: for a
        sampler run, during which the parameters do not change. No parameter gradients."""
        log_Z = self.log_Z(cache=False)

        def log_density(z: Any) -> tuple[Any, Any]:
            e, de = self.log_energy_and_grad(z[:, None, :])  # (N, P, Q) each
            lp, r = self._mix(e, log_Z)
            return lp, (r * de).sum(axis=1)

        return log_density

    def log_unnorm_and_grad(self, z: Any) -> tuple[Any, Any]:
        """log π(z) and ∇_z log π(z); see ``sampler_log_density``."""
        return self.sampler_log_density()(z)

    def log_unnorm(self, z: Any, cache: bool = True) -> Any:
        """log π(z) (N,): the mixture is normalised (its components' Z enter the weights, so
        no constant is left to drop). With ``cache``, ``log_unnorm_backward`` differentiates
        it, log Z included."""
        if not cache:
            return self.log_prob(z)
        lp, r = self._forward(z, with_logZ=True)
        self._r = r
        return lp

    def log_unnorm_backward(self, dlogp: Any, need_dz: bool = True) -> Any:
        """dlogp (N,) = ∂L/∂log π(z_n) -> ∂L/∂z (N, Q); parameter gradients (energies, log Z,
        logits) accumulate."""
        de = dlogp[:, None, None] * self._r
        ds = de.sum(axis=0)
        return self._backward(de, dlogZ=-ds, dlog_alpha=ds, need_dz=need_dz)

    def prior_loss(self, z_post: Any, weight: Any, z_cd: Any = None, exact_logZ: bool = False) -> Any:
        """− Σ_i weight_i log π(z_post_i) with ∇ log Z exact or by contrastive divergence from
        the prior draws z_cd (S', Q) (module docstring); gradients accumulate. Returns the
        value (0-d array), the same in both forms."""
        xp = self.be.xp
        n = z_post.shape[0]
        if exact_logZ:  # energies at z and at the quadrature nodes in one pass
            lp, r = self._forward(z_post, with_logZ=True)
            de = -weight[:, None, None] * r
            ds = de.sum(axis=0)
            self._backward(de, dlogZ=-ds, dlog_alpha=ds, need_dz=False)
            return -(weight * lp).sum()
        lp, r = self._forward(xp.concatenate([z_post, z_cd]), with_logZ=False)
        de_post = -weight[:, None, None] * r[:n]
        r_bar = -de_post.sum(axis=0)  # Σ_i a_i r_{q,p}(z_i), (P, Q)
        de_cd = r[n:] * (r_bar * xp.exp(-self.log_alpha()) / z_cd.shape[0])[None]
        self._backward(xp.concatenate([de_post, de_cd]), dlogZ=None, dlog_alpha=-r_bar, need_dz=False)
        return -(weight * lp[:n]).sum()

    # ---- forward / backward through energies, log Z and proportions ---------------------------
    def _forward(self, z: Any, with_logZ: bool) -> tuple[Any, Any]:
        """log π(z) (N,) and r (N, P, Q), caching for ``_backward``. With ``with_logZ`` the
        quadrature nodes ride along in the same layer pass (so log Z can be differentiated);
        otherwise log Z is evaluated without a cache (a constant)."""
        xp = self.be.xp
        n = z.shape[0]
        if with_logZ:
            nodes, _ = self.quadrature()
            f = self.layer.forward_pointwise(xp.concatenate([z, nodes])[:, None, :], cache=True)
            log_Z = self.log_Z(cache=True, f_nodes=f[n:])
        else:
            f = self.layer.forward_pointwise(z[:, None, :], cache=True)
            log_Z = self.log_Z(cache=False)
        self._n = n
        return self._mix(self.energy(f[:n], z[:, None, :], cache=True), log_Z)

    def _backward(self, de: Any, dlogZ: Any, dlog_alpha: Any, need_dz: bool) -> Any:
        """Gradients from ∂L/∂e at the cached z (N, P, Q), ∂L/∂log Z (P, Q) (None: log Z was a
        constant) and ∂L/∂log α (P, Q); returns ∂L/∂z (N, Q) or None."""
        xp, n = self.be.xp, self._n
        df = de
        if dlogZ is not None:  # ∂log Z/∂log g(x_k) = softmax_k of the log masses
            dlm = dlogZ[None] * self._z_softmax
            self.pi0.accumulate(self._z_dth, dlm)
            df = xp.concatenate([de, dlm])
        if self.train_proportions:  # log α_q = logits_q − logsumexp(logits_q)
            alpha = self.alpha()
            dla = dlog_alpha.T  # (Q, P)
            self.mix_grads["logits"] += dla - alpha * dla.sum(axis=1, keepdims=True)
        dx = self.layer.backward_pointwise(df, need_dz=need_dz)
        dz = self.energy_input_grad(de, None if dx is None else dx[:n])
        return None if dz is None else dz[:, 0, :]

    # ---- inverse transform sampling -----------------------------------------------------------
    def sample(self, n: int, rng: Any) -> Any:
        """n exact draws z (n, Q): component p ~ Categorical(α_q) per (draw, q) by inverting
        the cumulative proportions, then inverse transform from π_{q,p}."""
        xp, P, Q = self.be.xp, self.P, self.Q
        cdf, edges = self.its_tables()  # rows p·Q + q
        u = rng.random((n, 2, Q), dtype=self.be.dtype)  # a draw's uniforms in its row (kaem/streams.py)
        cum = xp.cumsum(self.alpha(), axis=1)  # (Q, P)
        comp = xp.minimum((u[:, 0, :, None] >= cum[None]).sum(axis=2), P - 1)  # (n, Q)
        z = rowwise_interp(u[:, 1], cdf, edges, rows=comp * Q + xp.arange(Q)[None, :])
        return z.astype(self.be.dtype, copy=False)
