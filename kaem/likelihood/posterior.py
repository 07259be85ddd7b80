"""A KAEM's posterior as a sampler target (the :class:`kaem.samplers.Target` protocol).

Chain i of a population z (N, *latent) — (N, Q, P) for the univariate prior, (N, Q) for
the mixture — targets the posterior of datum b(i) = i % B of the minibatch x (B, D):

    log p(z_i)          = log p̃(z_i)   (the prior's; univariate:
                          Σ_{q,p} [f_{q,p}(z_{i,q,p}) + log(π0(z_{i,q,p}) + ε)])
    log p(x_b(i) | z_i) = − ‖x_b(i) − out_act(G(h(z_i)))‖² / (2σ²)

with their z-gradients written by hand: the prior's through the KAN functions (the
prior's ``sampler_log_density``), the likelihood's through the output activation, the
generator (its backward without parameter gradients) and the prior's input map h(z)
(``to_input`` / ``input_grad``). The prior is left unnormalised where it can be: log Z
does not depend on z, so it changes no sampler (and replica exchange only looks at the
likelihood).

A population laid out temperature-major, i = k·B + b (what
:func:`kaem.samplers.thermo_sample` uses), or as R chains per datum, i = r·B + b, therefore
has datum b in its last index, as replica exchange requires.

Injection noise (σ_n of method §1.4) is NOT used inside the sampler by default: the target
is the noise-free likelihood N(x; out_act(g), σ²I), a deterministic function of z. With
noise redrawn at every evaluation the target would be a different random function at
every call, which breaks autoMALA's Metropolis test and reversibility check (they compare
log π at z and z' evaluated with different noise) and turns ULA's gradient into a noisy
one. The Julia reference does the same (its sampler passes a zero noise vector); the
injection noise enters the training losses (``kaem/langevin.py``), as in IS.
``injection_noise=True`` is offered for experiments (fresh noise per evaluation).

Neither gradient touches the parameter gradients: the prior's comes from its
``sampler_log_density`` (elementwise derivatives, no backward pass) and
the generator's backward runs with ``need_params=False``. ``bench/samplers.py`` measures
where a sampler step's time goes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaem.samplers.target import chain_rows

if TYPE_CHECKING:  # the model is only a type here: it is built from the objectives' settings
    from kaem.model import KAEM


class KAEMPosterior:
    """The tempered-posterior target of a KAEM for a minibatch x (B, D).

    Args:
        model: the KAEM. Its parameters must not change while the target is used: the
            prior's z-independent work (the mixture's log Z) is done once, here.
        x: (B, D) data on the model's device.
        injection_noise: add σ_n·ξ (fresh ξ per evaluation, from ``rng``) to the generator
            output inside the likelihood; off by default (see module docstring).
        rng: noise source, needed only with ``injection_noise``.
    """

    def __init__(self, model: KAEM, x: Any, injection_noise: bool = False, rng: Any = None) -> None:
        if injection_noise and rng is None:
            raise ValueError("injection_noise needs an rng")
        self.model, self.x, self.B = model, x, x.shape[0]
        self._log_prior = model.prior.sampler_log_density()
        self.injection_noise, self.rng = injection_noise, rng
        self._x_rows: Any = None
        self.n_evals = 0  # log_lik evaluations (population-wide)

    def rows(self, n: int) -> Any:
        """x_b(i) for chains i = 0..n−1, (n, D) (:func:`kaem.samplers.target.chain_rows`;
        cached per n); n must be a multiple of B."""
        if n % self.B:
            raise ValueError(f"population size {n} is not a multiple of the batch size {self.B}")
        if self._x_rows is None or self._x_rows.shape[0] != n:
            self._x_rows = chain_rows(self.x, n)
        return self._x_rows

    # ---- Target protocol ------------------------------------------------------------------
    def log_prior(self, z: Any) -> tuple[Any, Any]:
        """log p̃(z) (N,) and ∇_z log p̃(z) (N, *latent)."""
        return self._log_prior(z)

    def log_lik(self, z: Any) -> tuple[Any, Any]:
        """log p(x_b(i) | z_i) (N,), constant dropped, and its gradient in z (N, *latent):
        ∂ll/∂g from the likelihood, back through the generator (no parameter gradients) and
        the prior's input map."""
        m = self.model
        ll = self._log_lik(z, cache=True)
        dh = m.generator.backward(m.lik.rows_grad(), need_dh=True, need_params=False)
        return ll, m.prior.input_grad(dh)

    def log_lik_value(self, z: Any) -> Any:
        """log p(x_b(i) | z_i) (N,) alone: the generator's forward, no backward."""
        return self._log_lik(z, cache=False)

    def _log_lik(self, z: Any, cache: bool) -> Any:
        """ll (N,) at z by ``GaussianLikelihood.log_lik_rows`` without injection noise (the
        generator keeps what its backward needs when ``cache``)."""
        m = self.model
        g = m.generator.forward(m.prior.to_input(z), cache=cache)
        if self.injection_noise and m.lik.noise > 0:
            g = g + m.lik.noise * self.rng.standard_normal(g.shape, dtype=g.dtype)
        self.n_evals += 1
        return m.lik.log_lik_rows(self.rows(z.shape[0]), g)
