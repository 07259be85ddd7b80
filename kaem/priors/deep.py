"""The deep energy prior: the latent-space EBM of Pang et al. (2020) (method §1.3).

One multivariate energy over the whole latent z ∈ R^Q,

    π(z) = exp(f(z)) · π0(z) / Z,    π0 = N(0, I_Q),    Z = ∫ exp(f(z)) π0(z) dz = E_π0[exp f],

with f: R^Q → R a network, ``EbmModel.layer_widths`` = (Q, ..., 1) with more than two
entries. ``EbmModel.deep_body`` selects the network:

* ``kan``: a stack of KAN layers (``KANGenerator``, the reference's choice), with the
  EbmModel basis, grid and ``base_activation``;
* ``mlp``: dense layers with ``base_activation`` between them (``MLPGenerator``, the
  dense stack of ``kaem/generators/mlp.py``; Pang et al. use GELU or LeakyReLU).

Z has no closed form and no quadrature in Q dimensions, so:

* sampling is by the unadjusted Langevin algorithm (:func:`kaem.samplers.ula`) on the
  prior alone, from π0 draws, ``PRIOR_LANGEVIN.iters`` steps of
  z ← z + η ∇_z log p̃(z) + √(2η) ξ with η = ``PRIOR_LANGEVIN.step_size`` (Pang et al.'s
  z ← z − ½s²∇E + sξ with s = 0.4 is η = 0.08). Short-run chains: the draws follow the
  chain's law after that many steps, not π exactly;
* training needs the contrastive-divergence prior term (its negative samples are such
  draws); ``contrastive_divergence_training = false`` is a config error;
* evaluation estimates log Z by importance sampling from π0 (:meth:`DeepPrior.estimate_log_Z`).

The latent is z (N, Q) and the generator sees h = z.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from kaem.backend import Backend
from kaem.generators.kan import KANGenerator
from kaem.generators.mlp import MLPGenerator
from kaem.nn.kan import KANSpec, fixed_parameters
from kaem.numerics import logsumexp
from kaem.samplers import PriorOnly, ula
from kaem.priors.contrastive import unnorm_prior_loss
from kaem.priors.vector_latent import VectorLatent

BODIES = ("kan", "mlp")


class DeepPrior(VectorLatent):
    """log p̃(z) = f(z) + log N(z; 0, I) with f a KAN or MLP network R^Q -> R.

    Parameters and buffers are the network's (``self.net``). ``step_size`` and ``n_steps``
    are the prior Langevin sampler's η and number of steps.
    """

    kind = "deep"
    has_exact_logZ = False  # log Z is estimated (estimate_log_Z), never differentiated

    def __init__(self, be: Backend, widths: Sequence[int], body: str, spec: KANSpec, rng: Any,
                 step_size: float = 0.16, n_steps: int = 60) -> None:
        widths = tuple(int(w) for w in widths)
        if len(widths) < 3 or widths[-1] != 1:
            raise ValueError(f"deep prior widths {widths}: need (Q, hidden..., 1)")
        if body not in BODIES:
            raise ValueError(f"unknown deep prior body {body!r}; valid: {', '.join(BODIES)}")
        self.be, self.Q, self.widths, self.body = be, widths[0], widths, body
        self.step_size, self.n_steps = float(step_size), int(n_steps)
        # the generators' network stacks, reused as R^Q -> R energies
        self.net = (KANGenerator(be, widths, spec, rng) if body == "kan"
                    else MLPGenerator(be, widths, rng, activation=spec.activation))
        self._z: Any = None

    # ---- what the model, the optimiser and checkpoints see (latent_shape, to_input and
    # input_grad: VectorLatent) ---------------------------------------------------------------
    @property
    def params(self) -> dict:
        return self.net.params

    @property
    def grads(self) -> dict:
        return self.net.grads

    @property
    def buffers(self) -> dict:
        return self.net.buffers

    def zero_grad(self) -> None:
        self.net.zero_grad()

    def update_grid(self, z: Any, ratio: float) -> bool:
        """Grid updating (method §2.1) of a KAN body on posterior samples z (N, Q), layer by
        layer as in the generator; an MLP body has no grid. No domain to move: π0 has
        unbounded support."""
        return self.net.update_grids(z, ratio)

    # ---- densities ----------------------------------------------------------------------
    def log_pi0(self, z: Any) -> Any:
        """log N(z; 0, I) = −½‖z‖² − (Q/2) log 2π;  z (N, Q) -> (N,)."""
        return -0.5 * (z * z).sum(axis=1) - 0.5 * self.Q * math.log(2 * math.pi)

    def log_tilt(self, z: Any) -> Any:
        """f(z) (N,), the network alone: π(z) ∝ exp(f(z)) π0(z). No cache."""
        return self.net.forward(z, cache=False)[:, 0]

    def log_unnorm(self, z: Any, cache: bool = True) -> Any:
        """log p̃(z) = f(z) + log π0(z);  z (N, Q) -> (N,)."""
        f = self.net.forward(z, cache=cache)[:, 0]
        if cache:
            self._z = z
        return f + self.log_pi0(z)

    def log_unnorm_backward(self, dlogp: Any, need_dz: bool = True) -> Any:
        """dlogp (N,) = ∂L/∂log p̃(z_n) -> ∂L/∂z (N, Q) = dlogp·(∇f(z) − z); parameter
        gradients accumulate. Uses the cache of the last ``log_unnorm``."""
        dz = self.net.backward(dlogp[:, None], need_dh=need_dz, need_params=True)
        return None if dz is None else dz - dlogp[:, None] * self._z

    def log_unnorm_and_grad(self, z: Any) -> tuple[Any, Any]:
        """log p̃(z) (N,) and ∇_z log p̃(z) = ∇f(z) − z (N, Q), for samplers: one forward
        and one backward of the network without parameter gradients. Overwrites the
        network's cache (as the generator's posterior gradient does)."""
        f = self.net.forward(z, cache=True)
        df = self.net.backward(self.be.xp.ones_like(f), need_dh=True, need_params=False)
        return f[:, 0] + self.log_pi0(z), df - z

    def sampler_log_density(self) -> Callable[[Any], tuple[Any, Any]]:
        """z -> (log p̃(z), ∇_z log p̃(z)) for a sampler run (parameters fixed meanwhile)."""
        return self.log_unnorm_and_grad

    def prior_loss(self, z_post: Any, weight: Any, z_cd: Any = None, exact_logZ: bool = False) -> Any:
        """The prior part of every objective (method §4), gradients accumulating:
        − Σ_i weight_i log p̃(z_post_i) + (1/S') Σ_s log p̃(z_cd_s), z_cd prior-ULA draws; its
        gradient estimates −E_post[∇f] + E_π[∇f] = −E_post[∇ log π]. There is no exact log Z
        to differentiate, so z_cd is required."""
        if exact_logZ or z_cd is None:
            raise ValueError("the deep prior has no exact log Z: train it with contrastive divergence (z_cd)")
        return unnorm_prior_loss(self, z_post, weight, z_cd)

    # ---- sampling -----------------------------------------------------------------------
    def sample_pi0(self, n: int, rng: Any) -> Any:
        """n draws from π0 = N(0, I): (n, Q)."""
        return rng.standard_normal((n, self.Q), dtype=self.be.dtype)

    def sample(self, n: int, rng: Any) -> Any:
        """n approximate draws (n, Q): ``n_steps`` ULA steps of size ``step_size`` on the
        prior alone, started from π0 (the chains run in parallel; no loop over samples).
        The parameters are fixed meanwhile: a KAN body builds its W once for all steps."""
        with fixed_parameters():
            return ula(PriorOnly(self.log_unnorm_and_grad), self.sample_pi0(n, rng), 1.0,
                       self.step_size, self.n_steps, rng)

    # ---- normaliser by importance sampling ------------------------------------------------
    def estimate_log_Z(self, n: int, rng: Any, chunk: int = 2000) -> dict[str, float]:
        """log Z = log E_π0[exp f(z)] by importance sampling from π0, n draws in chunks.

        With w_i = exp(f(z_i)), z_i ~ π0: log Ẑ = log((1/n) Σ w_i). Its standard error by the
        delta method is se = sd(w) / (√n · mean(w)) (it underestimates when the weights are
        heavy-tailed, which the effective sample size ESS = (Σw)²/Σw² flags).
        Returns floats: ``logZ``, ``se``, ``ess`` (of n), ``n``.
        """
        xp = self.be.xp
        f = xp.concatenate([self.log_tilt(self.sample_pi0(min(chunk, n - i), rng))
                            for i in range(0, n, chunk)]).astype(xp.float64)
        lse = float(logsumexp(f, axis=0))
        w = xp.exp(f - f.max())
        m1, m2 = float(w.mean()), float((w * w).mean())
        var = max(m2 - m1 * m1, 0.0) * n / max(n - 1, 1)
        ess = float(w.sum() ** 2 / (w * w).sum())
        return {"logZ": lse - math.log(n), "se": math.sqrt(var / n) / m1, "ess": ess, "n": n}
