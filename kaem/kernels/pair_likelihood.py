"""The ``pair`` noise-sharing likelihood of importance sampling in cache-sized blocks.

Drop-in for ``GaussianLikelihood.log_lik_pairs_per_pair`` (``kaem/likelihood/gaussian.py``)
on the CPU: the (S, B, D) pass over every (sample, datum) pair runs in blocks of whole
s-slices of about ``BLOCK_ELEMENTS`` entries, spread over the threads; each block takes its
noise, forms y and r = x − y, reduces ‖r‖², and leaves ∂ll/∂g = r ⊙ out_act'(y)/σ² in an
(S, B, D) buffer the likelihood keeps across iterations (the reference allocates y and r
anew). The noise is the reference's draw, one ξ per (datum, sample).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.kernels import register
from kaem.kernels.threads import map_blocks, row_blocks
from kaem.likelihood.gaussian import log_lik
from kaem.streams import normals

# pair mode works through its (S, B, D) tensor in blocks of whole s-slices of about this
# many elements, so that the dozen elementwise passes of a block run in cache (CPU)
BLOCK_ELEMENTS = 1 << 18


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


def _times_output_grad_(name: str, y: Any, r: Any, inv_var: float) -> Any:
    """y := r ⊙ out_act'(y) / σ² in place (r is used as scratch)."""
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
    y *= inv_var
    return y


def _slices_per_block(S: int, B: int, D: int) -> int:
    """s-slices per block: about BLOCK_ELEMENTS entries."""
    return max(1, min(S, BLOCK_ELEMENTS // (B * D)))


@register("GaussianLikelihood.log_lik_pairs_per_pair")
def log_lik_pairs_per_pair(lik: Any, x: Any, g: Any, rng: Any = None, noise: Any = None) -> Any:
    """ll (B, S) of the ``pair`` mode in blocks over the threads (module docstring)."""
    xp = array_module(g)
    if xp is not np:
        return NotImplemented
    (S, D), B = g.shape, x.shape[0]
    if noise is None:  # ξ (B, S, D) per datum, the reference's draw (kaem/streams.py)
        noise = normals(rng, (B, S, D), g.dtype)
    shape = (S, B, D)
    buf = lik.__dict__.get("_kernel_pairs")
    if buf is None or buf.shape != shape or buf.dtype != g.dtype:
        buf = lik.__dict__["_kernel_pairs"] = xp.empty(shape, dtype=g.dtype)
    k = _slices_per_block(S, B, D)
    blocks = [(s0, min(S, s0 + k)) for s0 in range(0, S, k)]
    parts = row_blocks(xp, len(blocks))
    sq = xp.empty((S, B), dtype=g.dtype)
    inv_var = 1.0 / lik.sigma ** 2

    def run(j0: int, j1: int) -> None:
        r = xp.empty((k, B, D), dtype=g.dtype)
        for s0, s1 in blocks[j0:j1]:  # blocks of s-slices sized for the cache, not one per sample
            a, rb = buf[s0:s1], r[:s1 - s0]
            xp.multiply(noise[:, s0:s1].transpose(1, 0, 2), -lik.noise, out=a)
            a -= g[s0:s1, None, :]  # a = −(g + σ_n ξ)
            y = _output_of_negated_(lik.out_act, a)
            xp.subtract(x, y, out=rb)
            n = (s1 - s0) * B  # ‖r‖² per pair as a batched product: about twice einsum's speed
            sq[s0:s1] = (rb.reshape(n, 1, D) @ rb.reshape(n, D, 1)).reshape(s1 - s0, B)
            _times_output_grad_(lik.out_act, y, rb, inv_var)

    map_blocks(run, parts)
    lik._pairs = ("pair", buf)
    return log_lik(sq.T, lik.sigma)
