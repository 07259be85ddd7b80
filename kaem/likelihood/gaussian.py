"""Gaussian observation model with noise injection (spec section 1.4).

    log p(x | z) = − ‖ x − out_act( g + σ_n ξ ) ‖² / (2 σ²)  [ − D/2 · log(2π σ²) ],

g = G(h) the generator's pre-activation, ξ ~ N(0, I), σ = ``generator_variance`` (used as a
standard deviation, as the reference does) and σ_n = ``generator_noise``. Training drops
the constant; held-out evaluation keeps it and uses no injection noise, so its numbers
are true log densities of the model N(x; out_act(g), σ² I).

Who shares an injection-noise draw (``GeneratorModel.noise_sharing``):

* ``pair`` (the reference's): ξ_bs drawn for every (datum b, latent sample s); the
  importance-sampling likelihood then makes one pass over a (B, S, D) tensor.
* ``sample``: ξ_s drawn per latent sample and shared by the whole batch, exactly as z_s
  already is, so the proposal of importance sampling is the pair (z_s, ξ_s). With
  y_s = out_act(g_s + σ_n ξ_s) of shape (S, D) the likelihood and its gradient are matrix
  products:

      ‖x_b − y_s‖² = ‖x_b‖² − 2 x_b·y_s + ‖y_s‖²,
      ∂L/∂g_s = ( Σ_b dll[b,s] x_b − y_s Σ_b dll[b,s] ) ⊙ out_act'(y_s) / σ².

  Every single ll[b, s] has the same law in both modes; only the correlation between the
  data of a batch changes. For Langevin chains (paired rows, chain i = r·B + b for datum
  b) ``sample`` shares ξ_r across the batch, and ``pair`` draws one per chain.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.nn.activations import sigmoid
from kaem.backend import array_module
from kaem.numerics import normal_streams, standard_normal_
from kaem.kernels.threads import map_blocks, row_blocks

OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "none")
NOISE_SHARING = ("pair", "sample")
# pair mode works through its (S, B, D) tensor in blocks of whole s-slices of about this
# many elements, so that the dozen elementwise passes of a block run in cache (CPU)
BLOCK_ELEMENTS = 1 << 18


def apply_output_activation(name: str, a: Any, out: Any = None) -> Any:
    """y = out_act(a), optionally in place (``out=a``) to spare a (B, S, D) temporary."""
    xp = array_module(a)
    if name == "sigmoid":
        return sigmoid(a, out=out)
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


def _output_of_negated_(name: str, na: Any) -> Any:
    """y = out_act(a) in place from na = −a: the sigmoid is then 1/(1 + exp(na)) with no
    negation pass (exp may overflow to inf, which gives the right y = 0)."""
    xp = array_module(na)
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            xp.exp(na, out=na)
        na += 1
        return xp.reciprocal(na, out=na)
    if name == "tanh":
        xp.tanh(na, out=na)
    return xp.negative(na, out=na)


def _times_output_grad_(name: str, y: Any, r: Any) -> Any:
    """y := r ⊙ out_act'(y) in place (r is used as scratch)."""
    xp = array_module(y)
    if name == "sigmoid":
        r *= y
        xp.subtract(1, y, out=y)
    elif name == "tanh":
        y *= y
        xp.subtract(1, y, out=y)
    else:
        y[...] = 1
    y *= r
    return y


def squared_distances(x: Any, y: Any) -> Any:
    """‖x_b − y_s‖² for all pairs as one matrix product; x (B, D), y (S, D) -> (B, S).

    Both sides are centred on the mean of y first (the distances do not change), which
    keeps the cancellation in ‖x‖² − 2x·y + ‖y‖² small in float32."""
    c = y.mean(axis=0)
    xc, yc = x - c, y - c
    return (xc * xc).sum(1)[:, None] - 2 * (xc @ yc.T) + (yc * yc).sum(1)[None, :]


class GaussianLikelihood:
    """log p(x|z) for every (datum, latent) pair or for paired (chain, datum) rows."""

    def __init__(self, sigma: float, noise: float, out_act: str = "sigmoid", sharing: str = "pair") -> None:
        if out_act not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown output_activation {out_act!r}; valid: {', '.join(OUTPUT_ACTIVATIONS)}")
        if sharing not in NOISE_SHARING:
            raise ValueError(f"unknown noise_sharing {sharing!r}; valid: {', '.join(NOISE_SHARING)}")
        self.sigma, self.noise, self.out_act, self.sharing = float(sigma), float(noise), out_act, sharing
        self._buf: Any = None  # (S, B, D) pair-mode gradient factors, reused across iterations
        self._pairs: tuple = ()

    def log_norm_const(self, D: int) -> float:
        """The dropped constant − D/2 · log(2π σ²)."""
        return -0.5 * D * math.log(2 * math.pi * self.sigma ** 2)

    def _noisy_output(self, g: Any, rng: Any, noise: Any) -> Any:
        """y = out_act(g + σ_n ξ) with ξ given (``noise``, broadcastable to g) or drawn with
        g's shape from ``rng``."""
        if self.noise == 0:
            return apply_output_activation(self.out_act, g)
        xi = noise if noise is not None else standard_normal_(rng, array_module(g).empty_like(g))
        a = g + self.noise * xi
        return apply_output_activation(self.out_act, a, out=a)  # a is ours: no second temporary

    # ---- all pairs: importance sampling --------------------------------------------------
    def log_lik_pairs(self, x: Any, g: Any, rng: Any = None, noise: Any = None) -> Any:
        """ll[b, s] = log p(x_b | z_s) for every datum and latent sample, constant dropped.

        x: (B, D) data; g: (S, D) pre-activations. Injection noise from ``rng``, or given
        as ``noise``: (B, S, D) standard normals for ``pair`` sharing, (S, D) for ``sample``.
        Returns (B, S) and keeps what ``backward_pairs`` needs.
        """
        if self.sharing == "sample" or self.noise == 0:
            y = self._noisy_output(g, rng, noise)  # (S, D)
            self._pairs = ("sample", x, y)
            return squared_distances(x, y) * (-0.5 / self.sigma ** 2)
        return self._log_lik_pairs_independent(x, g, rng, noise)

    def _log_lik_pairs_independent(self, x: Any, g: Any, rng: Any, noise: Any) -> Any:
        """``pair`` sharing: one pass over the (S, B, D) tensor in cache-sized blocks of
        whole s-slices; each block draws its noise, forms y and r = x − y, reduces ‖r‖², and
        leaves r ⊙ out_act'(y) (per pair; ``backward_pairs`` applies the 1/σ²) in the
        reused buffer. On the CPU the blocks are shared out over the threads, each drawing
        from a generator advanced to its first block (``normal_streams``), so the noise is
        the sequential draw's whatever the number of threads."""
        xp = array_module(g)
        (S, D), B = g.shape, x.shape[0]
        shape = (S, B, D)
        if self._buf is None or self._buf.shape != shape or self._buf.dtype != g.dtype:
            self._buf = xp.empty(shape, dtype=g.dtype)
        buf = self._buf
        k = S if xp is not np else max(1, min(S, BLOCK_ELEMENTS // (B * D)))
        blocks = [(s0, min(S, s0 + k)) for s0 in range(0, S, k)]
        parts = row_blocks(xp, len(blocks))
        streams = {0: rng}
        if noise is None and len(parts) > 1:
            at = [j0 for j0, _ in parts]
            gens = normal_streams(rng, [(s1 - s0) * B * D for s0, s1 in blocks], g.dtype, at)
            if gens is None:
                parts = [(0, len(blocks))]
            else:
                streams = dict(zip(at, gens))
        sq = xp.empty((S, B), dtype=g.dtype)

        def run(j0: int, j1: int) -> None:
            r = xp.empty((k, B, D), dtype=g.dtype)
            for s0, s1 in blocks[j0:j1]:  # blocks of s-slices sized for the cache, not one per sample
                a, rb = buf[s0:s1], r[:s1 - s0]
                if noise is None:  # a = −σ_n ξ (the sign folded into the radius: no extra pass)
                    standard_normal_(streams[j0], a, scale=-self.noise)
                else:
                    xp.multiply(noise[:, s0:s1].transpose(1, 0, 2), -self.noise, out=a)
                a -= g[s0:s1, None, :]  # a = −(g + σ_n ξ)
                y = _output_of_negated_(self.out_act, a)
                xp.subtract(x, y, out=rb)
                n = (s1 - s0) * B  # ‖r‖² per pair as a batched product: about twice einsum's speed
                sq[s0:s1] = (rb.reshape(n, 1, D) @ rb.reshape(n, D, 1)).reshape(s1 - s0, B)
                _times_output_grad_(self.out_act, y, rb)

        map_blocks(run, parts)
        self._pairs = ("pair",)
        return sq.T * (-0.5 / self.sigma ** 2)

    def backward_pairs(self, dll: Any) -> Any:
        """dll (B, S) = ∂L/∂ll -> ∂L/∂g (S, D), with fixed shapes (no gather of the non-zero
        weights, which would cost a device sync).

        ``sample``: (dllᵀ x − y ⊙ Σ_b dll[b, :]) ⊙ out_act'(y)/σ², matrix products.
        ``pair``:   Σ_b dll[b,s] ∂ll[b,s]/∂g_s, one product batched over s with the factors
        the forward pass left in its buffer.
        """
        if self._pairs[0] == "sample":
            _, x, y = self._pairs
            dg = dll.T @ x
            dg -= y * dll.sum(axis=0)[:, None]
            dg *= output_activation_grad(self.out_act, y)
            dg *= 1.0 / self.sigma ** 2
            return dg
        dg = (dll.T[:, None, :] @ self._buf)[:, 0, :]
        dg *= 1.0 / self.sigma ** 2
        return dg

    # ---- paired rows: Langevin chains ---------------------------------------------------
    def log_lik_rows(self, x: Any, g: Any, rng: Any = None, noise: Any = None, batch: int | None = None) -> Any:
        """ll[n] = log p(x_n | z_n) for paired rows; x, g: (N, D) -> (N,). Caches for backward.

        Rows come in groups of ``batch`` (one per datum; default N): with ``sample`` sharing
        the rows of a group share one ξ, so ``noise`` is (N // batch, D); with ``pair`` every
        row has its own, (N, D).
        """
        xp = array_module(g)
        N, D = g.shape
        if self.sharing == "sample" and self.noise > 0:
            batch = N if batch is None else batch
            if N % batch:
                raise ValueError(f"{N} rows are not a whole number of groups of {batch}")
            if noise is None:
                noise = standard_normal_(rng, xp.empty((N // batch, D), dtype=g.dtype))
            # the group's ξ broadcast into the sum, not copied out to (N, D) first
            a = xp.add(g.reshape(N // batch, batch, D), (self.noise * noise)[:, None, :]).reshape(N, D)
            y = apply_output_activation(self.out_act, a, out=a)
        else:
            y = self._noisy_output(g, rng, noise)
        r = x - y
        self._rows = (r, y)
        return (r.reshape(N, 1, D) @ r.reshape(N, D, 1)).reshape(N) * (-0.5 / self.sigma ** 2)

    def backward_rows(self, dll: Any) -> Any:
        """dll (N,) -> ∂L/∂g (N, D) = r ⊙ out_act'(y) · dll/σ²."""
        r, y = self._rows
        dg = output_activation_grad(self.out_act, y)
        dg *= r
        dg *= (dll / self.sigma ** 2)[:, None]
        return dg

    # ---- evaluation: exact Gaussian densities, no injection noise -------------------------
    def log_density_matrix(self, x: Any, g: Any) -> Any:
        """log N(x_b; out_act(g_s), σ² I) for all pairs, constant included; (B, D), (S, D) -> (B, S).

        ‖x − y‖² = ‖x‖² − 2 x·y + ‖y‖² as one matrix product, so S can be in the thousands.
        """
        y = apply_output_activation(self.out_act, g)
        return squared_distances(x, y) * (-0.5 / self.sigma ** 2) + self.log_norm_const(x.shape[1])
