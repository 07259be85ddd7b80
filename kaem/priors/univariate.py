"""The univariate energy-based prior (method §1.1 and §3).

For every pair (q, p), q = 1..Q, p = 1..P, one learned density on [a_p, b_p]

    π_{q,p}(z) = exp(f_{q,p}(z)) · π0(z) / Z_{q,p},   Z_{q,p} = ∫ exp(f_{q,p}(z)) π0(z) dz,

with f_{q,p} one KAN function (``KANLayer`` with in = P, out = Q, used pointwise). Z is
computed by quadrature (``kaem/priors/quadrature.py``), which also gives an
exact-in-one-pass inverse-transform sampler. Latents are arrays z of shape (N, Q, P); the
prior of a latent is the product of its Q·P densities.
"""
from __future__ import annotations

from typing import Any, Callable

from kaem.backend import Backend, array_module
from kaem.nn.kan import KANSpec
from kaem.numerics import rowwise_interp
from kaem.kernels import replaceable
from kaem.priors.contrastive import contrastive_weights
from kaem.priors.quadrature import QuadratureDensities


class UnivariatePrior(QuadratureDensities):
    """Q×P independent univariate EBMs, normalised by quadrature, sampled by inverse transform.

    Parameters and buffers: see ``QuadratureDensities`` (layer, π0, ``domain`` (P, 2)).
    The latent of one sample is z (Q, P); the generator sees h_q = Σ_p z_{q,p}. π0's
    trainable parameters (learnable_gaussian) are per p, shape (P,).
    """

    kind = "univariate"

    def __init__(self, be: Backend, P: int, Q: int, spec: KANSpec, rng: Any, pi0: str = "ebm",
                 n_nodes: int = 100, eps: float = 1e-4, shared_uniform: bool = True,
                 quadrature: str = "gausslegendre") -> None:
        super().__init__(be, P, Q, spec, rng, pi0=pi0, pi0_shape=(P,), n_nodes=n_nodes, eps=eps,
                         quadrature=quadrature)
        self.P, self.Q, self.shared_uniform = P, Q, shared_uniform

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.Q, self.P)

    @staticmethod
    def to_input(z: Any) -> Any:
        """Generator input h_q = Σ_p z_{q,p}:  z (N, Q, P) -> h (N, Q), as a matrix-vector
        product with ones (numpy's sum over a short last axis is ≈ 8× slower here)."""
        return z @ array_module(z).ones(z.shape[2], dtype=z.dtype)

    def input_grad(self, dh: Any) -> Any:
        """Backward of ``to_input``: ∂L/∂z_{q,p} = ∂L/∂h_q;  dh (N, Q) -> (N, Q, P)."""
        return dh[:, :, None].repeat(self.P, axis=2)

    def update_grid(self, z: Any, ratio: float) -> bool:
        """Grid updating (method §2.1) on posterior samples z (N, Q, P): input p's grid is fitted
        to z[:, :, p], function (q, p) to its own samples. Returns whether it moved."""
        return self.update_layer_grid(z, ratio)

    # ---- log density ----------------------------------------------------------------------
    def log_unnorm(self, z: Any, cache: bool = True) -> Any:
        """log p̃(z) = Σ_{q,p} [f_{q,p}(z_{q,p}) + log(π0(z_{q,p}) + ε)];  z (N, Q, P) -> (N,)."""
        return self.log_energy(z, cache=cache).sum(axis=(1, 2))

    def log_unnorm_and_grad(self, z: Any) -> tuple[Any, Any]:
        """log p̃(z) (N,) and ∇_z log p̃(z) (N, Q, P) in one pass, for samplers: the gradient
        of Σ_{q,p} f_{q,p}(z_{q,p}) is elementwise, f'_{q,p}(z_{q,p}) + (log π0)'(z_{q,p}).
        No parameter gradients, no cache."""
        e, de = self.log_energy_and_grad(z)
        return e.sum(axis=(1, 2)), de

    def sampler_log_density(self) -> Callable[[Any], tuple[Any, Any]]:
        """z -> (log p̃(z), ∇_z log p̃(z)) for a sampler run (parameters fixed meanwhile)."""
        return self.log_unnorm_and_grad

    def log_unnorm_backward(self, dlogp: Any, need_dz: bool = True) -> Any:
        """dlogp (N,) = ∂L/∂log p̃(z_n) -> ∂L/∂z (N, Q, P); parameter gradients accumulate."""
        de = dlogp[:, None, None]  # the same weight for every (q, p) of a sample: a matrix-vector backward
        return self.log_energy_backward(de, need_dz=need_dz)

    def log_prob(self, z: Any) -> Any:
        """Normalised log π(z) = log p̃(z) - Σ_{q,p} log Z_{q,p};  z (N, Q, P) -> (N,)."""
        return self.log_unnorm(z, cache=False) - self.log_Z(cache=False).sum()

    def prior_loss(self, z_post: Any, weight: Any, z_cd: Any = None, exact_logZ: bool = False) -> Any:
        """The prior part of every objective (method §4), gradients accumulating:

            − Σ_i weight_i log p̃(z_post_i)  +  (1/S') Σ_s log p̃(z_cd_s)   (contrastive divergence)
                                             +  Σ_{q,p} log Z_{q,p}          (exact_logZ)

        (each normaliser term times Σ_i weight_i = 1, so that the loss is linear in the weights).

        z_post (N, Q, P) with constant weights (N,) summing to 1; z_cd (S', Q, P) fresh prior
        draws or None. Since ∇ log Z_{q,p} = E_{π_{q,p}}[∇ f_{q,p}], the CD term's gradient
        is a Monte Carlo estimate of Σ ∇ log Z. Returns the value (0-d array).
        """
        loss = self.weighted_log_energy(*contrastive_weights(z_post, weight, z_cd))
        if exact_logZ:  # Σ_i weight_i (= 1) Σ log Z: linear in the weights (kaem/priors/contrastive.py)
            logZ, a = self.log_Z(), weight.sum()
            loss = loss + a * logZ.sum()
            self.log_Z_backward(self.be.xp.ones_like(logZ) * a)
        return loss

    # ---- inverse transform sampling -----------------------------------------------------------
    @replaceable("UnivariatePrior.sample")
    def sample(self, n: int, rng: Any) -> Any:
        """n exact draws z (n, Q, P) by inverse transform on the quadrature CDF
        (``its_tables``): z_{q,p} = F⁻¹_{q,p}(u_p), one uniform u_p per p shared by every q
        (``shared_uniform``, the KART reading) or one per (q, p). No gradient, no MCMC, no
        loop over (q, p) or samples: one row-wise interpolation."""
        xp, Q, P = self.be.xp, self.Q, self.P
        cdf, edges = self.its_tables()  # rows q·P + p
        Qu = 1 if self.shared_uniform else Q
        u = rng.random((n, Qu, P), dtype=self.be.dtype)
        rows = xp.arange(Q * P).reshape(1, Q, P)  # table row q·P + p
        z = rowwise_interp(xp.broadcast_to(u, (n, Q, P)), cdf, edges, rows=rows)
        return z.astype(self.be.dtype, copy=False)
