"""The annealing paths of a KAEM, one per prior (for :mod:`kaem.evaluation.anneal`).

Every path anneals p_t(v | x_b) ∝ p_0(v) · L(v)^t with the Gaussian likelihood of the
generator, log p(x_b | z) = log N(x_b; out_act(G(h(z))), σ² I) (constant included, no
injection noise: what ``GaussianLikelihood.log_density_matrix`` evaluates), its z-gradient
by the generator's backward pass (:class:`~kaem.likelihood.posterior.KAEMPosterior`).
Chain i reads datum i % B.

* :class:`ITSPath` — univariate and mixture priors, the model ``sample_prior`` defines.
  The prior draws z = T(u) by inverse transform on the quadrature CDF tables
  (``its_tables``: a CDF piecewise linear between cell edges). AIS runs in ε-space:
  u = Φ(ε), ε ~ N(0, I), z = T(Φ(ε)); the base is the standard normal (exact draws, no
  quadrature mismatch), and p(x) = E_ε[p(x | T(Φ(ε)))] is exactly the likelihood of the
  model that draws z by ``prior.sample``. The gradient reaches ε by the chain rule:

      ∂z/∂u = cell width / cell mass  (constant within a cell),   ∂u/∂ε = φ(ε).

  Univariate prior: ε (Qu, P), Qu = 1 with ``shared_uniform`` (z_{q,p} = F⁻¹_{q,p}(Φ(ε_p))
  for every q, so ∂/∂ε_p sums over q), else Qu = Q. Mixture prior: ε (Q,); coordinate q is
  drawn from the component chosen with probability α_{q,p}, and all P components of q share
  q's cell edges, so z_q has the piecewise-linear CDF Σ_p α_{q,p} F_{q,p} on those edges,
  which T inverts (one table per q).
* :class:`MixtureDensityPath` — the mixture in z-space with its pointwise density
  π(z) = Π_q Σ_p α_{q,p} e^{f_{q,p}(z_q)} π0(z_q)/Z_{q,p} on the quadrature domain (Z by
  quadrature, no ε), started from ``prior.sample`` draws with the initial log weight
  log π(z0) − log q(z0), q the cell-constant density the sampler draws from. It estimates
  ∫ π(z) p(x|z) dz, which differs from the ITS path's target by the quadrature error.
* :class:`DeepJointPath` and :class:`DeepPriorPath` — the deep prior π ∝ e^f π0, π0 = N(0, I):
  from π0 to π0·e^f·p(x|z) (log of Z·p(x)) and from π0 to π0·e^f (log Z), both started from
  exact π0 draws; log p(x) is the difference.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.likelihood.posterior import KAEMPosterior
from kaem.numerics import logsumexp, rowwise_searchsorted
from kaem.samplers.target import Array

_LOG_2PI = math.log(2 * math.pi)
MIXTURE_PATHS = ("its", "density")  # the mixture prior's two latent spaces (module docstring)


def normal_cdf(x: Array) -> Array:
    """Φ(x), elementwise (scipy's ``ndtr`` on the host, cupyx's on the GPU)."""
    if array_module(x).__name__ == "cupy":
        from cupyx.scipy.special import ndtr
    else:
        from scipy.special import ndtr
    return ndtr(x)


def std_normal(v: Array) -> tuple[Array, Array]:
    """log N(v; 0, I) summed over a state (N,) and its gradient −v."""
    n = v.shape[0]
    d = v[0].size
    return -0.5 * (v * v).reshape(n, -1).sum(axis=1) - 0.5 * d * _LOG_2PI, -v


class ITSLatent:
    """The inverse-transform map z = T(Φ(ε)) of an exact prior, with its backward.

    Tables (float64): ``cdf`` and ``edges`` (R, M), one row per latent coordinate in
    z's flat order, and ``slope`` (R, M − 1) = width/mass per cell (0 for a massless cell,
    which u never falls into). ε has ``eps_shape``; the R = G·S rows read ε entry r % S
    (G = Q for the shared-uniform univariate prior, else 1).
    """

    def __init__(self, prior: Any) -> None:
        xp = prior.be.xp
        cdf, edges = prior.its_tables()
        if prior.kind == "univariate":
            Q, P = prior.Q, prior.P
            self.groups, self.eps_shape = (Q, (1, P)) if prior.shared_uniform else (1, (Q, P))
        elif prior.kind == "mixture":
            P, Q, M = prior.P, prior.Q, cdf.shape[1]  # rows p·Q + q
            cdf = xp.einsum("qp,pqm->qm", prior.alpha().astype(xp.float64),
                            cdf.reshape(P, Q, M).astype(xp.float64))
            edges = edges.reshape(P, Q, M)[0]
            self.groups, self.eps_shape = 1, (Q,)
        else:
            raise ValueError(f"prior {prior.kind!r} has no inverse-transform sampler; valid: univariate, mixture")
        self.cdf, self.edges = cdf.astype(xp.float64), edges.astype(xp.float64)
        width, mass = xp.diff(self.edges, axis=1), xp.diff(self.cdf, axis=1)
        self.slope = xp.where(mass > 0, width / xp.where(mass > 0, mass, 1.0), 0.0)
        self.latent_shape, self.dtype = tuple(prior.latent_shape), prior.be.dtype
        self.knots = self.cell_of_knot = None
        if self.groups > 1:
            self._merge()

    def _merge(self) -> None:
        """Tables shared by the G rows reading one ε entry s: their knots merged and sorted,
        ``knots`` (S, G·M), and each row's cell at every merged knot, ``cell_of_knot``
        (R, G·M) int32. For κ_j ≤ u < κ_{j+1} (consecutive merged knots) no knot of row r
        lies in (κ_j, u], so row r's cell at u is its cell at κ_j: one search per ε entry
        instead of one per row (41 times fewer on the default model), same cells."""
        xp = array_module(self.cdf)
        R, M = self.cdf.shape
        S = R // self.groups
        self.knots = xp.sort(self.cdf.reshape(self.groups, S, M).transpose(1, 0, 2).reshape(S, -1), axis=1)
        queries = xp.tile(self.knots, (self.groups, 1))  # row r = g·S + s reads knots[s]
        cell = xp.clip(rowwise_searchsorted(self.cdf, queries) - 1, 0, M - 2)
        self.cell_of_knot = cell.astype(xp.int32)

    def cells(self, u: Array) -> tuple[Array, Array]:
        """Flat indices into ``cdf``/``edges`` and into ``slope`` of the cell of each query;
        u (R, N) in [0, 1] -> two (R, N) integer arrays."""
        xp = array_module(u)
        R, M = self.cdf.shape
        r = xp.arange(R)[:, None]
        if self.knots is None:
            c = xp.clip(rowwise_searchsorted(self.cdf, u) - 1, 0, M - 2)
        else:  # the merged knots of the rows sharing an ε entry (``_merge``)
            S, GM = self.knots.shape
            j = xp.clip(rowwise_searchsorted(self.knots, u[:S]) - 1, 0, GM - 1)  # (S, N)
            c = xp.take(self.cell_of_knot, xp.tile(j, (self.groups, 1)) + r * GM).astype(xp.int64)
        return c + r * M, c + r * (M - 1)

    def forward(self, eps: Array) -> tuple[Array, Array]:
        """z = T(Φ(ε)) (N, *latent_shape) in the model's dtype and ∂z/∂u (R, N) float64."""
        xp = array_module(eps)
        n = eps.shape[0]
        u = normal_cdf(eps.reshape(n, -1).astype(xp.float64)).T  # (S, N)
        u = xp.tile(u, (self.groups, 1))  # (R, N): row r reads ε entry r % S
        at, at_slope = self.cells(u)
        slope = xp.take(self.slope, at_slope)
        z = xp.take(self.edges, at) + (u - xp.take(self.cdf, at)) * slope
        return z.T.reshape((n,) + self.latent_shape).astype(self.dtype), slope

    def backward(self, dz: Array, eps: Array, slope: Array) -> Array:
        """∂/∂ε from ∂/∂z (N, *latent_shape): Σ over the rows sharing an ε entry of
        dz·∂z/∂u, times φ(ε); -> like eps."""
        xp = array_module(eps)
        n = eps.shape[0]
        g = (dz.reshape(n, -1).T * slope).reshape(self.groups, -1, n).sum(axis=0)  # (S, N)
        e = eps.reshape(n, -1).astype(xp.float64)
        phi = xp.exp(-0.5 * e * e - 0.5 * _LOG_2PI)
        return (g.T * phi).reshape(eps.shape).astype(eps.dtype)


class _GeneratorLikelihood:
    """log p(x_b(i) | z_i) with the Gaussian constant, and its z-gradient."""

    def __init__(self, model: Any, x: Array) -> None:
        self.model, self.x, self.B = model, x, x.shape[0]
        self.post = KAEMPosterior(model, x)
        self.const = model.lik.log_norm_const(x.shape[1])

    def lik_z(self, z: Array) -> tuple[Array, Array]:
        ll, g = self.post.log_lik(z)
        return ll + self.const, g

    def lik_z_value(self, z: Array) -> Array:
        return self.post.log_lik_value(z) + self.const


class ITSPath(_GeneratorLikelihood):
    """Univariate or mixture prior in ε-space (module docstring); states ε (N, *eps_shape)."""

    exact_base = True  # (ε, x) drawn as the model draws them: usable for bidirectional MC
    normal_base = True  # base N(0, I): refresh moves apply (moves.refresh_moves)
    init_step = 0.5

    def __init__(self, model: Any, x: Array, latent: ITSLatent | None = None) -> None:
        super().__init__(model, x)
        self.map = latent if latent is not None else ITSLatent(model.prior)
        self.latent_shape = self.map.eps_shape

    def sample_base(self, n: int, rng: Any) -> tuple[Array, None]:
        return rng.standard_normal((n,) + self.latent_shape, dtype=self.model.be.dtype), None

    def latent(self, eps: Array) -> Array:
        """The model's latent z = T(Φ(ε))."""
        return self.map.forward(eps)[0]

    def log_prior(self, eps: Array) -> tuple[Array, Array]:
        return std_normal(eps)

    def log_lik(self, eps: Array) -> tuple[Array, Array]:
        z, slope = self.map.forward(eps)
        ll, gz = self.lik_z(z)
        return ll, self.map.backward(gz, eps, slope)

    def log_lik_value(self, eps: Array) -> Array:
        return self.lik_z_value(self.latent(eps))


class MixtureDensityPath(_GeneratorLikelihood):
    """The mixture prior in z-space with its pointwise density (module docstring)."""

    exact_base = False  # started from the sampler's cell-constant density, not from π
    normal_base = False  # base π on a bounded domain: no refresh moves
    init_step = 0.1

    def __init__(self, model: Any, x: Array, latent: ITSLatent | None = None) -> None:
        super().__init__(model, x)
        prior = model.prior
        if prior.kind != "mixture":
            raise ValueError(f"MixtureDensityPath needs the mixture prior, not {prior.kind!r}")
        self.prior, self.latent_shape = prior, tuple(prior.latent_shape)
        self.map = latent if latent is not None else ITSLatent(prior)
        # the support: the sampler's cell edges, [a_q, b_q]
        self.lo, self.hi = self.map.edges[:, 0], self.map.edges[:, -1]
        self.c = prior.log_alpha() - prior.log_Z(cache=False)  # log α − log Z, (P, Q)

    def latent(self, z: Array) -> Array:
        return z

    def sample_base(self, n: int, rng: Any) -> tuple[Array, Array]:
        z = self.prior.sample(n, rng)
        return z, self.log_prior(z)[0].astype(np.float64) - self.log_sampler_density(z)

    def log_sampler_density(self, z: Array) -> Array:
        """log q(z) (N,) float64: Σ_q log(mass/width) of the cell holding z_q."""
        xp = array_module(z)
        span = self.hi - self.lo
        zn = xp.clip((z.astype(xp.float64).T - self.lo[:, None]) / span[:, None], 0.0, 1.0)
        en = xp.clip((self.map.edges - self.lo[:, None]) / span[:, None], 0.0, 1.0)
        R, M = en.shape
        c = xp.clip(rowwise_searchsorted(en, zn) - 1, 0, M - 2)
        slope = xp.take(self.map.slope, c + xp.arange(R)[:, None] * (M - 1))
        with np.errstate(divide="ignore"):
            return -xp.log(slope).sum(axis=0)

    def log_prior(self, z: Array) -> tuple[Array, Array]:
        """log π(z) (−inf outside the domain) and its gradient Σ_p r_{q,p}(f' + (log π0)')."""
        xp = array_module(z)
        zz = z[:, None, :]
        f, df = self.prior.layer.derivative_pointwise(zz)  # (N, P, Q)
        with np.errstate(divide="ignore", invalid="ignore"):
            lp0, dlp0 = self.prior.pi0.log_pdf(zz)
            a = f + lp0 + self.c[None]
            lse = logsumexp(a, axis=1)  # (N, Q)
            r = xp.exp(a - lse[:, None, :])
            g = (r * (df + dlp0)).sum(axis=1)
        inside = ((z >= self.lo.astype(z.dtype)) & (z <= self.hi.astype(z.dtype))).all(axis=1)
        lp = xp.where(inside, lse.sum(axis=1), -xp.inf).astype(z.dtype)
        return lp, xp.where(inside[:, None], g, 0.0).astype(z.dtype)

    def log_lik(self, z: Array) -> tuple[Array, Array]:
        return self.lik_z(z)

    def log_lik_value(self, z: Array) -> Array:
        return self.lik_z_value(z)


class DeepJointPath(_GeneratorLikelihood):
    """Deep prior: π0 = N(0, I) to π0·e^f·p(x|z); the weights estimate log(Z·p(x_b))."""

    exact_base = True
    normal_base = True
    init_step = 0.5

    def __init__(self, model: Any, x: Array) -> None:
        super().__init__(model, x)
        self.prior, self.latent_shape = model.prior, tuple(model.prior.latent_shape)

    def sample_base(self, n: int, rng: Any) -> tuple[Array, None]:
        return self.prior.sample_pi0(n, rng), None

    def latent(self, z: Array) -> Array:
        return z

    def log_prior(self, z: Array) -> tuple[Array, Array]:
        return std_normal(z)

    def log_lik(self, z: Array) -> tuple[Array, Array]:
        """f(z) + log p(x|z) and ∇f + ∇ log p(x|z) (∇f from ∇ log p̃ = ∇f − z)."""
        lu, g = self.prior.log_unnorm_and_grad(z)
        ll, gz = self.lik_z(z)
        return lu - self.prior.log_pi0(z) + ll, g + z + gz

    def log_lik_value(self, z: Array) -> Array:
        return self.prior.log_tilt(z) + self.lik_z_value(z)


class DeepPriorPath:
    """Deep prior alone: π0 = N(0, I) to π0·e^f (one "datum", B = 1); the weights estimate log Z."""

    exact_base = True
    normal_base = True
    init_step = 0.5
    B = 1

    def __init__(self, prior: Any) -> None:
        self.prior, self.latent_shape = prior, tuple(prior.latent_shape)

    def sample_base(self, n: int, rng: Any) -> tuple[Array, None]:
        return self.prior.sample_pi0(n, rng), None

    def log_prior(self, z: Array) -> tuple[Array, Array]:
        return std_normal(z)

    def log_lik(self, z: Array) -> tuple[Array, Array]:
        lu, g = self.prior.log_unnorm_and_grad(z)
        return lu - self.prior.log_pi0(z), g + z

    def log_lik_value(self, z: Array) -> Array:
        return self.prior.log_tilt(z)


def make_path(model: Any, x: Array, mixture: str = "its", latent: ITSLatent | None = None) -> Any:
    """The path of ``model``'s prior for data x (B, D): ITS for the univariate prior and (by
    default) the mixture, ``mixture="density"`` for the mixture's pointwise density, the
    joint path for the deep prior (whose log Z needs :class:`DeepPriorPath` besides)."""
    kind = model.prior.kind
    if mixture not in MIXTURE_PATHS:
        raise ValueError(f"unknown mixture path {mixture!r}; valid: {', '.join(MIXTURE_PATHS)}")
    if kind == "deep":
        return DeepJointPath(model, x)
    if kind == "mixture" and mixture == "density":
        return MixtureDensityPath(model, x, latent)
    return ITSPath(model, x, latent)

