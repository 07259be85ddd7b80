"""The univariate energy-based prior (spec sections 1.1 and 3).

For every pair (q, p), q = 1..Q, p = 1..P, one learned density on [a_p, b_p]

    π_{q,p}(z) = exp(f_{q,p}(z)) · π0(z) / Z_{q,p},   Z_{q,p} = ∫ exp(f_{q,p}(z)) π0(z) dz,

with f_{q,p} one KAN function (``KANLayer`` with in = P, out = Q, used pointwise).
Z is computed by Gauss–Legendre quadrature, which also gives an exact-in-one-pass
inverse-transform sampler. Latents are arrays z of shape (N, Q, P).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import Backend
from .kan import KANLayer, KANSpec
from .numerics import logsumexp, rowwise_interp, softmax

_SQRT_2PI = math.sqrt(2 * math.pi)


def _pdf_ebm(xp, z):
    return xp.ones_like(z), xp.zeros_like(z)


def _pdf_uniform(xp, z):
    return ((z >= 0) & (z <= 1)).astype(z.dtype), xp.zeros_like(z)


def _pdf_gaussian(xp, z):
    p = xp.exp(-0.5 * z * z) / _SQRT_2PI
    return p, -z * p


def _pdf_lognormal(xp, z):
    pos = z > 0
    zs = xp.where(pos, z, 1)  # keeps log finite where the density is 0
    lz = xp.log(zs)
    p = xp.where(pos, xp.exp(-0.5 * lz * lz) / (zs * _SQRT_2PI), 0)
    return p, xp.where(pos, -p * (lz + 1) / zs, 0)


# name -> (density and its derivative, domain [a, b] as in the reference (None = the KAN
# grid_range), support of π0). Quadrature and sampling run on domain ∩ support: across the
# jumps of the uniform density Gauss–Legendre loses its accuracy (Z off by 1% at 100 nodes)
# and inverse transform would put mass outside [0, 1].
PI0: dict[str, tuple[Any, tuple[float, float] | None, tuple[float, float]]] = {
    "ebm": (_pdf_ebm, None, (-math.inf, math.inf)),
    "uniform": (_pdf_uniform, (-0.1, 1.1), (0.0, 1.0)),
    "gaussian": (_pdf_gaussian, (-1.2, 1.2), (-math.inf, math.inf)),
    "lognormal": (_pdf_lognormal, (0.0, 4.0), (0.0, math.inf)),
}


class UnivariatePrior:
    """Q×P independent univariate EBMs, normalised by quadrature, sampled by inverse transform.

    Parameters live in ``self.layer.params`` (see ``KANLayer``). Buffers: ``domain``
    (P, 2), the integration interval [a_p, b_p] of every input p.
    """

    def __init__(self, be: Backend, P: int, Q: int, spec: KANSpec, rng: Any, pi0: str = "ebm",
                 n_nodes: int = 100, eps: float = 1e-4, shared_uniform: bool = True) -> None:
        if pi0 not in PI0:
            raise ValueError(f"unknown π_0 {pi0!r}; valid: {', '.join(PI0)}")
        self.be, self.P, self.Q = be, P, Q
        self.pi0_name, self.eps, self.shared_uniform = pi0, eps, shared_uniform
        self.layer = KANLayer(be, P, Q, spec, rng)
        self._pdf, dom, self._support = PI0[pi0]
        lo, hi = dom if dom is not None else spec.grid_range
        xi, wi = np.polynomial.legendre.leggauss(n_nodes)
        self._gl = (be.asarray(xi), be.asarray(wi))  # reference nodes/weights on [-1, 1]
        self.buffers = {"domain": be.asarray(np.tile([[lo, hi]], (P, 1)))}

    @property
    def params(self) -> dict:
        return self.layer.params

    @property
    def grads(self) -> dict:
        return self.layer.grads

    # ---- π0 -------------------------------------------------------------------------------
    def log_pi0(self, z: Any) -> tuple[Any, Any]:
        """log(π0(z) + ε) and its derivative in z, elementwise (any shape)."""
        p, dp = self._pdf(self.be.xp, z)
        return self.be.xp.log(p + self.eps), dp / (p + self.eps)

    # ---- unnormalised log density -----------------------------------------------------------
    def log_unnorm(self, z: Any, cache: bool = True) -> Any:
        """log p̃(z) = Σ_{q,p} [f_{q,p}(z_{q,p}) + log(π0(z_{q,p}) + ε)];  z (N, Q, P) -> (N,)."""
        f = self.layer.forward_pointwise(z, cache=cache)
        lp0, dlp0 = self.log_pi0(z)
        if cache:
            self._dlp0 = dlp0
        return (f + lp0).sum(axis=(1, 2))

    def log_unnorm_and_grad(self, z: Any) -> tuple[Any, Any]:
        """log p̃(z) (N,) and ∇_z log p̃(z) (N, Q, P) in one pass, for samplers: the gradient
        of Σ_{q,p} f_{q,p}(z_{q,p}) is elementwise, f'_{q,p}(z_{q,p}) + (log π0)'(z_{q,p}).
        No parameter gradients, no cache."""
        f, df = self.layer.derivative_pointwise(z)
        lp0, dlp0 = self.log_pi0(z)
        return (f + lp0).sum(axis=(1, 2)), df + dlp0

    def log_unnorm_backward(self, dlogp: Any, need_dz: bool = True) -> Any:
        """dlogp (N,) = ∂L/∂log p̃(z_n) -> ∂L/∂z (N, Q, P); parameter gradients accumulate."""
        df = self.be.xp.broadcast_to(dlogp[:, None, None], (dlogp.shape[0], self.Q, self.P))
        dz = self.layer.backward_pointwise(df, need_dz=need_dz)
        return None if dz is None else dz + df * self._dlp0

    # ---- normalisation by quadrature --------------------------------------------------------
    def interval(self) -> tuple[Any, Any]:
        """Integration interval per input, domain ∩ support of π0: lo, hi both (P,)."""
        xp = self.be.xp
        return (xp.maximum(self.buffers["domain"][:, 0], self._support[0]),
                xp.minimum(self.buffers["domain"][:, 1], self._support[1]))

    def quadrature(self, n_nodes: int | None = None) -> tuple[Any, Any]:
        """Gauss–Legendre nodes and weights mapped to each interval: both (K, P).
        ``n_nodes`` other than the configured K builds a rule on the fly (quadrature checks)."""
        if n_nodes is None:
            xi, wi = self._gl
        else:
            xi, wi = (self.be.asarray(a) for a in np.polynomial.legendre.leggauss(n_nodes))
        lo, hi = self.interval()
        half = 0.5 * (hi - lo)
        return lo + half * (xi[:, None] + 1), wi[:, None] * half

    def _log_masses(self, cache: bool, n_nodes: int | None = None) -> Any:
        """log of w_k · exp(f_{q,p}(x_k)) · π0(x_k), shape (K, Q, P)."""
        xp = self.be.xp
        nodes, w = self.quadrature(n_nodes)
        f = self.layer.forward_pointwise(nodes[:, None, :], cache=cache)  # shared over q
        p0, _ = self._pdf(xp, nodes)
        with np.errstate(divide="ignore"):  # π0 = 0 outside its support -> mass 0
            return f + xp.log(w * p0)[:, None, :]

    def log_Z(self, cache: bool = True, n_nodes: int | None = None) -> Any:
        """log Z_{q,p} ≈ log Σ_k w_k exp(f_{q,p}(x_k)) π0(x_k);  -> (Q, P)."""
        lm = self._log_masses(cache, n_nodes)
        if cache:
            self._z_softmax = softmax(lm, axis=0)
        return logsumexp(lm, axis=0)

    def log_Z_backward(self, dlogZ: Any) -> None:
        """dlogZ (Q, P) = ∂L/∂log Z; ∂log Z/∂f(x_k) = softmax_k(log masses)."""
        self.layer.backward_pointwise(dlogZ[None] * self._z_softmax, need_dz=False)

    def quadrature_error(self) -> float:
        """max_{q,p} |log Z with K nodes − log Z with 2K nodes|: how far the configured rule is
        from converged. Wiggly energies (FFT bases at high frequency) need more nodes."""
        K = self._gl[0].shape[0]
        return float(abs(self.log_Z(cache=False) - self.log_Z(cache=False, n_nodes=2 * K)).max())

    def log_prob(self, z: Any) -> Any:
        """Normalised log π(z) = log p̃(z) - Σ_{q,p} log Z_{q,p};  z (N, Q, P) -> (N,)."""
        return self.log_unnorm(z, cache=False) - self.log_Z(cache=False).sum()

    # ---- inverse transform sampling -----------------------------------------------------------
    def sample(self, n: int, rng: Any) -> Any:
        """n exact draws z (n, Q, P) by inverse transform on the quadrature CDF.

        The cumulative GL weights split [a, b] into K cells (node k lies inside cell k), so
        cell k gets mass w_k exp(f(x_k)) π0(x_k). The CDF at the cell edges, prefixed by 0,
        is inverted by linear interpolation inside the cell u falls in: one pass of forward
        evaluations, no gradient, no MCMC, no loop over (q, p) or samples.
        """
        xp, Q, P = self.be.xp, self.Q, self.P
        _, w = self.quadrature()
        lo, _ = self.interval()
        lm = self._log_masses(cache=False)  # (K, Q, P)
        mass = xp.exp(lm - lm.max(axis=0, keepdims=True)).reshape(lm.shape[0], Q * P).T  # (QP, K)
        cdf = xp.concatenate([xp.zeros((Q * P, 1), mass.dtype), xp.cumsum(mass, axis=1)], axis=1)
        cdf /= cdf[:, -1:]
        edges = lo[None, :] + xp.concatenate([xp.zeros((1, P), w.dtype), xp.cumsum(w, axis=0)])
        edges = xp.broadcast_to(edges.T[None], (Q, P, edges.shape[0])).reshape(Q * P, -1)
        Qu = 1 if self.shared_uniform else Q  # shared: one u_p for every q (the KART reading)
        u = rng.random((n, Qu, P), dtype=self.be.dtype).transpose(1, 2, 0)  # (Qu, P, n)
        # sorted queries make the search cheap (each continues from the last); undone below
        order = xp.argsort(u, axis=2)
        u = xp.broadcast_to(xp.take_along_axis(u, order, axis=2), (Q, P, n)).reshape(Q * P, n)
        z = rowwise_interp(u, cdf, edges).reshape(Q, P, n)  # sorted along n
        z = xp.take_along_axis(z, xp.argsort(order, axis=2), axis=2)  # back to draw order
        return xp.ascontiguousarray(z.transpose(2, 0, 1)).astype(self.be.dtype, copy=False)
