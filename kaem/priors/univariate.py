"""The univariate energy-based prior (spec sections 1.1 and 3).

For every pair (q, p), q = 1..Q, p = 1..P, one learned density on [a_p, b_p]

    π_{q,p}(z) = exp(f_{q,p}(z)) · π0(z) / Z_{q,p},   Z_{q,p} = ∫ exp(f_{q,p}(z)) π0(z) dz,

with f_{q,p} one KAN function (``KANLayer`` with in = P, out = Q, used pointwise).
Z is computed by Gauss–Legendre quadrature, which also gives an exact-in-one-pass
inverse-transform sampler. Latents are arrays z of shape (N, Q, P).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend
from ..grid_update import prior_domain_from_grid, update_pointwise_grid
from ..kan import KANLayer, KANSpec
from ..numerics import logsumexp, rowwise_interp, softmax
from .pi0 import PI0


class UnivariatePrior:
    """Q×P independent univariate EBMs, normalised by quadrature, sampled by inverse transform.

    Parameters live in ``self.layer.params`` (see ``KANLayer``). Buffers: the layer's
    (``grid``, frozen ``tau``) and ``domain`` (P, 2), the integration interval [a_p, b_p] of
    every input p. The latent of one sample is z (Q, P); the generator sees h_q = Σ_p z_{q,p}.
    """

    has_exact_logZ = True  # Z_{q,p} by quadrature, so log Z can be differentiated exactly

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
        self.domain = be.asarray(np.tile([[lo, hi]], (P, 1)))

    @classmethod
    def from_config(cls, cfg: Any, be: Backend, rng: Any) -> "UnivariatePrior":
        """The prior a config describes: EbmModel.layer_widths = (P, Q)."""
        e = cfg["EbmModel"]
        P, Q = e["layer_widths"]
        return cls(be, int(P), int(Q), KANSpec.from_section(e), rng, pi0=e["π_0"],
                   n_nodes=e["GaussQuad_nodes"], eps=cfg["TRAINING"]["eps"], shared_uniform=e["shared_uniform"])

    # ---- what the model, the optimiser and checkpoints see ---------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.Q, self.P)

    @property
    def params(self) -> dict:
        return self.layer.params

    @property
    def grads(self) -> dict:
        return self.layer.grads

    @property
    def buffers(self) -> dict:
        """grid (P, n_knots), frozen tau, domain (P, 2); arrays are the live ones (in-place
        writes update the prior)."""
        out = {k: v for k, v in self.layer.buffers.items() if v is not None}
        out["domain"] = self.domain
        return out

    def zero_grad(self) -> None:
        self.layer.zero_grad()

    @staticmethod
    def to_input(z: Any) -> Any:
        """Generator input h_q = Σ_p z_{q,p}:  z (N, Q, P) -> h (N, Q)."""
        return z.sum(axis=2)

    def input_grad(self, dh: Any) -> Any:
        """Backward of ``to_input``: ∂L/∂z_{q,p} = ∂L/∂h_q;  dh (N, Q) -> (N, Q, P)."""
        return dh[:, :, None].repeat(self.P, axis=2)

    def update_grid(self, z: Any, ratio: float) -> bool:
        """Grid updating (spec 2.1) on posterior samples z (N, Q, P); the quadrature domain
        follows the new grid (widened, never shrunk: spec 7.2). Returns whether it moved."""
        if not update_pointwise_grid(self.layer, z, ratio):
            return False
        self.domain[...] = prior_domain_from_grid(self.layer.basis.interior(self.layer.buffers["grid"]))
        return True

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
        return (xp.maximum(self.domain[:, 0], self._support[0]),
                xp.minimum(self.domain[:, 1], self._support[1]))

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
