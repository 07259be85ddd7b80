"""Normalisation by quadrature and inverse transform sampling (method §3), shared by the
univariate and the mixture prior.

Both priors are made of the same thing: the functions f_{o,i} of one KAN layer (in = I,
out = O) used pointwise, each the energy of a normalised univariate density on input i's
interval [a_i, b_i],

    π_{o,i}(x) = exp(f_{o,i}(x)) π0(x) / Z_{o,i},   Z_{o,i} = ∫_{a_i}^{b_i} exp(f_{o,i}(x)) π0(x) dx.

The univariate prior has O = Q, I = P (density (q, p) on latent coordinate (q, p)); the
mixture has O = P components for each of I = Q coordinates. ``QuadratureDensities`` holds
the layer, π0 and the integration domain, and computes log Z (with its gradient), the
inverse-transform tables and grid updates for either.

Quadrature rules (``EbmModel.quadrature_method``), with g = exp(f) π0 the integrand:

* ``gausslegendre``: Z ≈ Σ_k w_k g(x_k), K = ``GaussQuad_nodes`` nodes mapped to [a, b] by
  x = (a+b)/2 + (b−a)/2·ξ (method §7.6). Inverse transform: the cumulative weights split [a, b]
  into K cells with node k inside cell k; cell k gets mass w_k g(x_k).
* ``trapezium``: Z ≈ Σ_k ½(g(x_{k−1}) + g(x_k))(x_k − x_{k−1}) on the KAN grid (the reference's
  rule): the nodes are a, the layer's grid points inside (a, b), and b; a grid-free basis
  (FFT, Chebyshev) has no grid, so G+1 evenly spaced points are used. Inverse transform:
  the cells are the intervals between nodes, each with its trapezoid's mass.

Either way the sampler inverts the CDF that is piecewise linear between cell edges, i.e. it
draws from a density that is constant within each cell and has the rule's cell masses; the
priors' log densities are exp(f)π0/Z with the same Z. ``quadrature_error`` reports how far
a rule is from converged (log Z with every cell split in two, or twice the GL nodes).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.backend import Backend
from kaem.nn.grid_update import prior_domain_from_grid, update_pointwise_grid
from kaem.kernels import replaceable
from kaem.nn.kan import KANLayer, KANSpec
from kaem.numerics import logsumexp, softmax
from kaem.priors.pi0 import BaseDensity


class GaussLegendre:
    """K Gauss–Legendre nodes per interval; ``refine`` r uses r·K nodes."""

    name = "gausslegendre"

    def __init__(self, be: Backend, n_nodes: int) -> None:
        self.be, self.n_nodes = be, int(n_nodes)
        self._ref: dict[int, tuple[Any, Any]] = {}

    def _reference(self, K: int) -> tuple[Any, Any]:
        """Nodes and weights on [-1, 1], cached per K."""
        if K not in self._ref:
            self._ref[K] = tuple(self.be.asarray(a) for a in np.polynomial.legendre.leggauss(K))
        return self._ref[K]

    def rule(self, lo: Any, hi: Any, points: Any = None, refine: int = 1) -> tuple[Any, Any]:
        """Nodes and weights (K, I) on the intervals [lo_i, hi_i]; ``points`` is unused."""
        xi, wi = self._reference(self.n_nodes * refine)
        half = 0.5 * (hi - lo)
        return lo + half * (xi[:, None] + 1), wi[:, None] * half

    def cells(self, nodes: Any, w: Any, lo: Any, log_g: Any) -> tuple[Any, Any]:
        """Inverse-transform cells: edges (K+1, I) and log masses (K, O, I) from log g (K, O, I)."""
        xp = self.be.xp
        edges = lo[None, :] + xp.concatenate([xp.zeros((1, w.shape[1]), w.dtype), xp.cumsum(w, axis=0)])
        return edges, log_g + xp.log(w)[:, None, :]


class Trapezium:
    """The trapezoidal rule on the interval's ends and the grid points inside it; ``refine`` r
    splits every cell into r equal ones. ``n_points`` nodes when there is no grid."""

    name = "trapezium"

    def __init__(self, be: Backend, n_points: int) -> None:
        self.be, self.n_points = be, int(n_points)

    def rule(self, lo: Any, hi: Any, points: Any = None, refine: int = 1) -> tuple[Any, Any]:
        """Nodes (M, I), non-decreasing from lo to hi, and their trapezoid weights (M, I).
        points: the grid (I, G+1) or None. Grid points outside [lo, hi] collapse onto the
        ends (zero-width cells, zero weight)."""
        xp = self.be.xp
        if points is None:
            t = xp.linspace(0.0, 1.0, self.n_points, dtype=lo.dtype)[:, None]
            x = lo[None, :] + t * (hi - lo)[None, :]
        else:
            inner = xp.minimum(xp.maximum(points.T, lo[None, :]), hi[None, :])
            x = xp.concatenate([lo[None, :], inner, hi[None, :]])
        if refine > 1:
            frac = xp.arange(refine, dtype=x.dtype)[None, :, None] / refine
            steps = x[:-1, None, :] + frac * xp.diff(x, axis=0)[:, None, :]
            x = xp.concatenate([steps.reshape(-1, x.shape[1]), x[-1:]])
        half = 0.5 * xp.diff(x, axis=0)
        w = xp.zeros_like(x)
        w[:-1] += half
        w[1:] += half
        return x, w

    def cells(self, nodes: Any, w: Any, lo: Any, log_g: Any) -> tuple[Any, Any]:
        """Edges = the nodes (M, I); cell k between nodes k and k+1 has the trapezoid mass
        ½(g_k + g_{k+1})Δ_k, as logs (M−1, O, I)."""
        xp = self.be.xp
        half = 0.5 * xp.diff(nodes, axis=0)
        return nodes, xp.logaddexp(log_g[:-1], log_g[1:]) + xp.log(half)[:, None, :]


QUADRATURE_METHODS = ("gausslegendre", "trapezium")


def make_rule(method: str, be: Backend, n_nodes: int, grid_size: int) -> Any:
    """The rule ``EbmModel.quadrature_method`` names."""
    if method == "gausslegendre":
        return GaussLegendre(be, n_nodes)
    if method == "trapezium":
        return Trapezium(be, grid_size + 1)
    raise ValueError(f"unknown quadrature_method {method!r}; valid: {', '.join(QUADRATURE_METHODS)}")


class QuadratureDensities:
    """The O×I densities π_{o,i} of a KAN layer (in = I, out = O) used pointwise, with π0,
    normalised by quadrature on each input's interval (see the module docstring).

    Parameters: the layer's (``w_base``, ``w_sp``, ``coef``, ``tau``) and π0's
    (``pi0_mu``, ``pi0_log_sigma`` for learnable_gaussian). Buffers: the layer's (``grid``,
    frozen ``tau``) and ``domain`` (I, 2), the integration interval of every input, which
    follows the grid when the grid is updated. ``pi0_shape`` is the shape of π0's
    parameters, broadcastable against (..., O, I).
    """

    has_exact_logZ = True  # Z by quadrature, so log Z can be differentiated exactly

    def __init__(self, be: Backend, in_dim: int, out_dim: int, spec: KANSpec, rng: Any, pi0: str = "ebm",
                 pi0_shape: tuple[int, ...] = (1,), n_nodes: int = 100, eps: float = 1e-4,
                 quadrature: str = "gausslegendre") -> None:
        self.pi0 = BaseDensity(pi0, be, pi0_shape)
        self.be, self.eps, self.pi0_name = be, eps, pi0
        self.layer = KANLayer(be, in_dim, out_dim, spec, rng)
        self.rule = make_rule(quadrature, be, n_nodes, spec.grid_size)
        lo, hi = self.pi0.domain if self.pi0.domain is not None else spec.grid_range
        self.domain = be.asarray(np.tile([[lo, hi]], (in_dim, 1)))

    # ---- what the model, the optimiser and checkpoints see ---------------------------------
    @property
    def params(self) -> dict:
        return {**self.layer.params, **self.pi0.params}

    @property
    def grads(self) -> dict:
        return {**self.layer.grads, **self.pi0.grads}

    @property
    def buffers(self) -> dict:
        """grid (I, n_knots), frozen tau, domain (I, 2); arrays are the live ones (in-place
        writes update the prior)."""
        out = {k: v for k, v in self.layer.buffers.items() if v is not None}
        out["domain"] = self.domain
        return out

    def zero_grad(self) -> None:
        self.layer.zero_grad()
        self.pi0.zero_grad()

    # ---- energies: e = f + log(π0 + ε) --------------------------------------------------
    def log_pi0(self, x: Any, param_derivs: bool = False) -> tuple:
        """log(π0(x) + ε), its x-derivative and (``param_derivs``) {θ: ∂/∂θ}, elementwise;
        for a flat π0 (ebm) the constants log(1 + ε) and 0 as 0-d arrays, which broadcast
        wherever they are added."""
        xp = self.be.xp
        if self.pi0.flat:  # no elementwise passes for a constant
            out = (xp.full((), math.log1p(self.eps), dtype=x.dtype), xp.zeros((), dtype=x.dtype))
            return out + ({},) if param_derivs else out
        lp, dlp, *dth = self.pi0.log_pdf(x, param_derivs)
        p = xp.exp(lp)
        s = p / (p + self.eps)  # ∂ log(π0 + ε) = π0/(π0 + ε) · ∂ log π0
        out = (xp.log(p + self.eps), s * dlp)
        return out + ({k: s * d for k, d in dth[0].items()},) if param_derivs else out

    def energy(self, f: Any, z: Any, cache: bool = False) -> Any:
        """e = f + log(π0(z) + ε): the energy of every density at its input, from the layer's
        values f there; z (N, O, I), or (N, 1, I) for inputs shared by all O functions. With
        ``cache`` keeps what ``log_energy_backward`` needs of π0."""
        if not cache:
            return f + self.log_pi0(z)[0]
        lp0, dlp0, dth = self.log_pi0(z, param_derivs=True)
        self._e_cache = (z.shape[1] == 1, dlp0, dth)
        return f + lp0

    def log_energy(self, z: Any, cache: bool = True) -> Any:
        """e[n,o,i] = f_{o,i}(z[n,o,i]) + log(π0(z[n,o,i]) + ε);  z (N, O, I), or (N, 1, I)
        for inputs shared by all O functions  ->  (N, O, I)."""
        return self.energy(self.layer.forward_pointwise(z, cache=cache), z, cache)

    def energy_input_grad(self, de: Any, dz: Any) -> Any:
        """∂L/∂z from the layer's dz and π0's part de ⊙ (log(π0 + ε))', with the π0
        parameter gradients accumulated (the cache of the last ``energy``)."""
        shared, dlp0, dth = self._e_cache
        self.pi0.accumulate(dth, de)
        if dz is None:
            return None
        return dz + ((de * dlp0).sum(axis=1, keepdims=True) if shared else de * dlp0)

    def log_energy_backward(self, de: Any, need_dz: bool = True) -> Any:
        """de (N, O, I) = ∂L/∂e -> ∂L/∂z shaped like the forward's z; parameter gradients
        (layer and π0) accumulate."""
        return self.energy_input_grad(de, self.layer.backward_pointwise(de, need_dz=need_dz))

    @replaceable("QuadratureDensities.weighted_log_energy")
    def weighted_log_energy(self, z: Any, d: Any) -> Any:
        """L = Σ_n d_n Σ_{o,i} e[n,o,i] for z (N, O, I) and constant weights d (N,); parameter
        gradients (layer and π0) accumulate. Returns L (0-d). The layer's part is
        ``KANLayer.weighted_pointwise``, π0's is added here."""
        f = self.layer.weighted_pointwise(z, d)
        if self.pi0.flat:  # log(π0 + ε) = log(1 + ε) everywhere, no parameters
            return f + math.log1p(self.eps) * (z[0].size * d.sum())
        lp0, _, dth = self.log_pi0(z, param_derivs=True)
        self.pi0.accumulate(dth, d[:, None, None])
        return f + d @ lp0.reshape(z.shape[0], -1).sum(axis=1)

    def log_energy_and_grad(self, z: Any) -> tuple[Any, Any]:
        """e (N, O, I) and ∂e/∂z elementwise (N, O, I), no cache, no parameter gradients
        (what samplers need)."""
        f, df = self.layer.derivative_pointwise(z)  # new arrays: added into in place
        lp0, dlp0 = self.log_pi0(z)
        f += lp0
        if not self.pi0.flat:  # a flat π0's slope is 0: no pass
            df += dlp0
        return f, df

    # ---- normalisation by quadrature --------------------------------------------------------
    def interval(self) -> tuple[Any, Any]:
        """Integration interval per input, domain ∩ support of π0: lo, hi both (I,)."""
        xp = self.be.xp
        lo_s, hi_s = self.pi0.support
        return xp.maximum(self.domain[:, 0], lo_s), xp.minimum(self.domain[:, 1], hi_s)

    def quadrature(self, refine: int = 1) -> tuple[Any, Any]:
        """Nodes and weights of the configured rule on every interval: both (K, I)."""
        grid = self.layer.buffers["grid"]
        points = None if grid is None else self.layer.basis.interior(grid)
        lo, hi = self.interval()
        return self.rule.rule(lo, hi, points, refine)

    def log_integrand(self, x: Any, cache: bool = False, f: Any = None) -> Any:
        """log g = f_{o,i}(x) + log π0(x), the integrand of Z (no ε), at points x (K, I) shared
        by every o -> (K, O, I). ``f``: the layer's values there if already computed (the
        mixture's one pass over samples and nodes). ``cache``: keep π0's parameter
        derivatives for ``log_Z_backward``."""
        if f is None:
            f = self.layer.forward_pointwise(x[:, None, :], cache=cache)
        with np.errstate(divide="ignore"):
            lp, _, dth = self.pi0.log_pdf(x[:, None, :], param_derivs=True)
        if cache:
            self._z_dth = dth
        return f + lp

    def log_Z(self, cache: bool = True, refine: int = 1, f_nodes: Any = None) -> Any:
        """log Z_{o,i} = log Σ_k w_k exp(f_{o,i}(x_k)) π0(x_k);  -> (O, I). ``f_nodes``: the
        layer's values at the rule's nodes, if already computed."""
        nodes, w = self.quadrature(refine)
        with np.errstate(divide="ignore"):  # zero weights (trapezium ends) -> mass 0
            lm = self.log_integrand(nodes, cache, f_nodes) + self.be.xp.log(w)[:, None, :]
        if cache:
            self._z_softmax = softmax(lm, axis=0)
        return logsumexp(lm, axis=0)

    def log_Z_backward(self, dlogZ: Any) -> None:
        """dlogZ (O, I) = ∂L/∂log Z; ∂log Z/∂log g(x_k) = softmax_k(log masses)."""
        dlm = dlogZ[None] * self._z_softmax
        self.pi0.accumulate(self._z_dth, dlm)
        self.layer.backward_pointwise(dlm, need_dz=False)

    def quadrature_error(self) -> float:
        """max_{o,i} |log Z − log Z with every cell split in two (GL: 2K nodes)|: how far the
        configured rule is from converged. Wiggly energies (FFT bases at high frequency)
        need more nodes."""
        return float(abs(self.log_Z(cache=False) - self.log_Z(cache=False, refine=2)).max())

    def quadrature_error_sum(self) -> float:
        """Σ_{o,i} |Δ log Z_{o,i}|, the same comparison summed over all O·I functions: log p(x)
        contains −Σ log Z, so this is how far the rule's error can move a log-likelihood."""
        return float(abs(self.log_Z(cache=False) - self.log_Z(cache=False, refine=2)).sum())

    # ---- inverse transform sampling -----------------------------------------------------------
    def its_tables(self) -> tuple[Any, Any]:
        """CDF of every density on its cell edges, row r = o·I + i: cdf (O·I, C+1) rising
        from 0 to 1 and the edges (O·I, C+1). One pass of forward evaluations, no gradient."""
        xp = self.be.xp
        O, I = self.layer.out_dim, self.layer.in_dim
        nodes, w = self.quadrature()
        lo, _ = self.interval()
        with np.errstate(divide="ignore"):
            edges, lcell = self.rule.cells(nodes, w, lo, self.log_integrand(nodes))
        C = lcell.shape[0]
        mass = lcell - lcell.max(axis=0, keepdims=True)
        xp.exp(mass, out=mass)
        cdf = xp.empty((O * I, C + 1), dtype=mass.dtype)
        cdf[:, 0] = 0
        cdf[:, 1:] = xp.cumsum(mass.reshape(C, O * I).T, axis=1)  # (cupy's out= may not write a strided view)
        cdf /= cdf[:, -1:]
        return cdf, xp.broadcast_to(edges.T[None], (O, I, C + 1)).reshape(O * I, C + 1)

    # ---- grid updating and curves -------------------------------------------------------------
    def update_layer_grid(self, z: Any, ratio: float) -> bool:
        """Grid updating (method §2.1) on samples z (N, O, I) of every function's input; the
        quadrature domain follows the new grid (widened, never shrunk: method §7.2)."""
        if not update_pointwise_grid(self.layer, z, ratio):
            return False
        self.domain[...] = prior_domain_from_grid(self.layer.basis.interior(self.layer.buffers["grid"]))
        return True

    def densities(self, x: Any) -> Any:
        """π_{o,i}(x[n, i]) = exp(f_{o,i}(x) + log π0(x) − log Z_{o,i}) (no ε: the density the
        sampler draws from);  x (n, I) -> (n, O, I)."""
        return self.be.xp.exp(self.log_integrand(x) - self.log_Z(cache=False)[None])

    def pi0_densities(self, x: Any) -> Any:
        """π0 renormalised to each interval by the same rule as Z: what π_{o,i} would be with
        f = 0;  x (n, I) -> (n, O or 1, I)."""
        xp = self.be.xp
        nodes, w = self.quadrature()
        z0 = (w[:, None, :] * xp.exp(self.pi0.log_pdf(nodes[:, None, :])[0])).sum(axis=0)
        return xp.exp(self.pi0.log_pdf(x[:, None, :])[0]) / z0[None]
