"""Gaussian observation model with noise injection (spec section 1.4).

    log p(x | z) = − ‖ x − out_act( g + σ_n ξ ) ‖² / (2 σ²)  [ − D/2 · log(2π σ²) ],

g = G(h) the generator's pre-activation, ξ ~ N(0, I), σ = ``generator_variance`` (used as a
standard deviation, as the reference does) and σ_n = ``generator_noise``. Training drops
the constant; held-out evaluation keeps it and uses no injection noise, so its numbers
are true log densities of the model N(x; out_act(g), σ² I).
"""
from __future__ import annotations

import math
from typing import Any

from .activations import sigmoid
from .backend import array_module
from .numerics import standard_normal_

OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "none")


def apply_output_activation(name: str, a: Any, out: Any = None) -> Any:
    """y = out_act(a), optionally in place (``out=a``) to spare a (B, S, D) temporary."""
    xp = array_module(a)
    if name == "sigmoid":
        if out is None:
            return sigmoid(a)
        xp.clip(a, -60, 60, out=out)  # exp stays finite in float32
        xp.negative(out, out=out)
        xp.exp(out, out=out)
        out += 1
        return xp.reciprocal(out, out=out)
    if name == "tanh":
        return xp.tanh(a, out=out)
    if out is None:
        return a.copy()
    if out is not a:
        out[...] = a
    return out


def output_activation_grad(name: str, y: Any) -> Any:
    """out_act'(a) written in terms of y = out_act(a)."""
    if name == "sigmoid":
        return y * (1 - y)
    if name == "tanh":
        return 1 - y * y
    return array_module(y).ones_like(y)


class GaussianLikelihood:
    """log p(x|z) for every (datum, latent) pair or for paired (chain, datum) rows."""

    def __init__(self, sigma: float, noise: float, out_act: str = "sigmoid") -> None:
        if out_act not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown output_activation {out_act!r}; valid: {', '.join(OUTPUT_ACTIVATIONS)}")
        self.sigma, self.noise, self.out_act = float(sigma), float(noise), out_act
        self._buf: Any = None  # (B, S, D) residuals, reused across iterations

    def log_norm_const(self, D: int) -> float:
        """The dropped constant − D/2 · log(2π σ²)."""
        return -0.5 * D * math.log(2 * math.pi * self.sigma ** 2)

    def _residual_buffer(self, xp: Any, shape: tuple, dtype: Any) -> Any:
        if self._buf is None or self._buf.shape != shape or self._buf.dtype != dtype:
            self._buf = xp.empty(shape, dtype=dtype)
        return self._buf

    # ---- all pairs: importance sampling --------------------------------------------------
    def log_lik_pairs(self, x: Any, g: Any, rng: Any = None, noise: Any = None) -> Any:
        """ll[b, s] = log p(x_b | z_s) with independent injection noise per (b, s).

        x: (B, D) data; g: (S, D) pre-activations; noise: (B, S, D) standard normals to use
        (tests), else drawn from ``rng``. Returns (B, S). Keeps the residual x − y in a
        reused (B, S, D) buffer for ``backward_pairs``.
        """
        xp = array_module(g)
        r = self._residual_buffer(xp, (x.shape[0], g.shape[0], g.shape[1]), g.dtype)
        if self.noise > 0:
            if noise is None:
                standard_normal_(rng, r)
            else:
                r[...] = noise
            r *= self.noise
            r += g[None]
        else:
            r[...] = g[None]
        apply_output_activation(self.out_act, r, out=r)  # r = y
        xp.subtract(x[:, None, :], r, out=r)  # r = x − y
        self._x = x
        return xp.einsum("bsd,bsd->bs", r, r) * (-0.5 / self.sigma ** 2)

    def backward_pairs(self, dll: Any) -> Any:
        """dll (B, S) = ∂L/∂ll -> ∂L/∂g (S, D).

        ∂ll[b,s]/∂g_s = (x_b − y_bs)/σ² · out_act'(y_bs). Only pairs with dll ≠ 0 are
        gathered: after softmax and resampling most weights are exactly zero, so this is
        exact and avoids a second full (B, S, D) pass.
        """
        xp = array_module(dll)
        b, s = xp.nonzero(dll)
        r = self._buf[b, s]  # (nnz, D)
        y = self._x[b] - r
        contrib = r * output_activation_grad(self.out_act, y) * (dll[b, s] / self.sigma ** 2)[:, None]
        onehot = (s[None, :] == xp.arange(dll.shape[1])[:, None]).astype(contrib.dtype)  # (S, nnz)
        return onehot @ contrib

    # ---- paired rows: Langevin chains ---------------------------------------------------
    def log_lik_rows(self, x: Any, g: Any, rng: Any = None, noise: Any = None) -> Any:
        """ll[n] = log p(x_n | z_n) for paired rows; x, g: (N, D) -> (N,). Caches for backward."""
        xp = array_module(g)
        a = g
        if self.noise > 0:
            xi = rng.standard_normal(g.shape, dtype=g.dtype) if noise is None else noise
            a = g + self.noise * xi
        y = apply_output_activation(self.out_act, a)
        r = x - y
        self._rows = (r, y)
        return xp.einsum("nd,nd->n", r, r) * (-0.5 / self.sigma ** 2)

    def backward_rows(self, dll: Any) -> Any:
        """dll (N,) -> ∂L/∂g (N, D)."""
        r, y = self._rows
        return r * output_activation_grad(self.out_act, y) * (dll / self.sigma ** 2)[:, None]

    # ---- evaluation: exact Gaussian densities, no injection noise -------------------------
    def log_density_matrix(self, x: Any, g: Any) -> Any:
        """log N(x_b; out_act(g_s), σ² I) for all pairs, constant included; (B, D), (S, D) -> (B, S).

        ‖x − y‖² = ‖x‖² − 2 x·y + ‖y‖² as one matrix product, so S can be in the thousands.
        """
        y = apply_output_activation(self.out_act, g)
        sq = (x * x).sum(1)[:, None] - 2 * (x @ y.T) + (y * y).sum(1)[None, :]
        return sq * (-0.5 / self.sigma ** 2) + self.log_norm_const(x.shape[1])
