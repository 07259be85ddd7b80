"""The RBF prior's hot sums without the (N, out, in, nb) basis tensor.

Drop-ins for two functions of the KAN layer used pointwise (``kaem/nn/kan.py``), when the
basis is RBF, B_g(z) = exp(−u²/2), u = (z − t_g)/w, w = h·τ:

* ``KANLayer.weighted_pointwise`` (a prior's loss L = Σ_n d_n Σ_{o,i} φ_{i,o}(z[n,o,i]) with
  constant weights d): the weights enter only through
      S = Σ_n d_n B(z_n),  T = Σ_n d_n ∂B(z_n)/∂τ  (out, in, nb),  β = Σ_n d_n b(z_n)  (out, in),
      L = Σ W ⊙ S + Σ w_baseᵀ ⊙ β,  ∂L/∂W = S,  ∂L/∂τ = Σ W ⊙ T,  ∂L/∂w_base = βᵀ,
  so neither the basis tensor nor the per-sample f is formed (``weighted_sums``);
* ``KANLayer.derivative_pointwise`` (a sampler's φ and φ'): Σ_g W_g B_g and Σ_g W_g B'_g one
  knot at a time (``value_and_slope``), on the CPU in row blocks over the threads (any basis:
  other bases run the reference on each block).

Each knot costs one exp and a few passes over a chunk that stays in a core's cache.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.kernels import REFERENCES, register
from kaem.kernels.threads import map_blocks, row_blocks

# Values per pass of the per-knot loop of weighted_sums: a chunk's three working arrays
# stay in a core's cache (2^15 float32: 128 kB each).
SLOPE_CHUNK = 1 << 15
# The same for value_and_slope, whose row blocks come from its caller: larger, so that
# its ~130 ufunc calls per chunk cost little and two threads seldom wait on each other
# for the GIL between them (MNIST prior, 100 and 500 chains, two threads: 2^17 beat
# 2^14–2^16 by 10–30%; 512 kB per array still fits the 1 MB L2).
VALUE_SLOPE_CHUNK = 1 << 17


def weighted_sums(basis: Any, z: Any, d: Any, grid: Any, tau: Any, need_dtau: bool = True) -> tuple[Any, Any]:
    """S[o,i,g] = Σ_n d_n B_g(z[n,o,i]) and T[o,i,g] = Σ_n d_n ∂B_g/∂τ(z[n,o,i]), one knot
    at a time, never the (N, out, in, nb) tensor. With a = (z − c)/w and k_g = (t_g − c)/w
    (c the grid's centre, w = h·τ the width), u = a − k_g:

        B_g = exp(−u²/2),   ∂B_g/∂τ = u²·B_g/τ,

    per knot one exp and four cheap passes over a chunk of about ``SLOPE_CHUNK`` values
    that stays in cache, the sums over n as matrix-vector products with d. On the CPU the
    samples are split into one row block per thread (``threads.py``), partial sums
    added in block order. z (N, out, in), d (N,) -> S, T (out, in, nb) (T None unless
    ``need_dtau``)."""
    xp = array_module(z)
    N, O, I = z.shape
    nb, M = grid.shape[1], z.shape[1] * z.shape[2]
    w = basis.width(grid, tau)  # (in,)
    c = 0.5 * (grid[:, 0] + grid[:, -1])
    a = (z - c) / w  # (N, out, in)
    a = a.reshape(N, M)
    knots = ((grid - c[:, None]) / w[:, None]).T  # (nb, in), broadcast to (nb, out·in) rows:
    knots = xp.ascontiguousarray(xp.broadcast_to(knots[:, None, :], (nb, O, I))).reshape(nb, M)
    rows = N if xp is not np else max(1, SLOPE_CHUNK // max(M, 1))

    def block(r0: int, r1: int) -> tuple[Any, Any]:
        S = xp.zeros((nb, M), dtype=a.dtype)
        T = xp.zeros((nb, M), dtype=a.dtype) if need_dtau else None
        k = -(-(r1 - r0) // rows)  # chunks of equal size
        u, t, e = (xp.empty((-(-(r1 - r0) // k), M), dtype=a.dtype) for _ in range(3))
        for j in range(k):
            s0, s1 = r0 + (r1 - r0) * j // k, r0 + (r1 - r0) * (j + 1) // k
            ab, db = a[s0:s1], d[s0:s1]
            ub, tb, eb = u[:s1 - s0], t[:s1 - s0], e[:s1 - s0]
            for g in range(nb):
                xp.subtract(ab, knots[g], out=ub)
                xp.multiply(ub, ub, out=tb)
                tb *= -0.5  # −u²/2
                xp.exp(tb, out=eb)
                S[g] += db @ eb
                if need_dtau:
                    tb *= eb  # −u²B/2
                    T[g] += db @ tb
        return S, T

    parts = map_blocks(block, row_blocks(xp, N, min_rows=rows))
    S, T = parts[0]
    for Sb, Tb in parts[1:]:  # block order: reproducible
        S += Sb
        if need_dtau:
            T += Tb
    S = S.reshape(nb, O, I).transpose(1, 2, 0)
    if need_dtau:
        T *= -2.0 / tau
        T = T.reshape(nb, O, I).transpose(1, 2, 0)
    return S, T


def value_and_slope(basis: Any, z: Any, grid: Any, tau: Any, W: Any, out: tuple | None = None) -> tuple[Any, Any]:
    """S0 = Σ_g W_g B_g(z) and S1 = Σ_g W_g B'_g(z) for z (N, out, in), W (out, in, nb),
    one knot at a time on (rows, out, in) arrays, never the (N, out, in, nb) tensor;
    into ``out`` (two (N, out, in) arrays) if given.

    With a = (z − c)/w and a_g = (t_g − c)/w (c the grid's centre, so that the
    differences below cancel little), B_g = exp(−(a − a_g)²/2), B'_g = −(a − a_g)·B_g/w:

        S0 = Σ_g W_g B_g,    S1 = (Σ_g a_g W_g B_g − a·S0) / w.

    With both inputs pre-scaled by √½ (b = a/√2, k_g = a_g/√2) the exponent is
    (b − k_g)², and dividing W_g by exp((b − k_g)²) negates it and weights the bump in one
    pass: a knot costs one exp and six cheap passes (subtract, square, divide, two sums,
    one multiply by a_g) over a chunk of about ``VALUE_SLOPE_CHUNK`` values that stays in
    cache. An exp that overflows gives W_g/inf = 0, the bump's true (underflowing) value. Any
    grid: grid updating makes it non-uniform, which rules out the uniform-grid recurrence
    exp(−(a−gδ)²/2) = exp(−a²/2)·exp(agδ)·exp(−g²δ²/2); the exp per basis function is
    what is left (most of the time). Single-threaded: the caller spreads row blocks over
    the cores (:func:`derivative_pointwise`)."""
    xp = array_module(z)
    w = basis.width(grid, tau)  # (in,)
    c = 0.5 * (grid[:, 0] + grid[:, -1])
    nb, (out_dim, in_dim) = grid.shape[1], W.shape[:2]
    knots = ((grid - c[:, None]) / w[:, None]).T  # a_g, (nb, in)
    per_knot = (nb, out_dim, in_dim)  # operands laid out (out, in) per knot: contiguous passes
    kr = xp.ascontiguousarray(xp.broadcast_to((knots * math.sqrt(0.5))[:, None, :], per_knot))
    ka = xp.ascontiguousarray(xp.broadcast_to(knots[:, None, :], per_knot))
    Wg = xp.ascontiguousarray(W.transpose(2, 0, 1))
    S0, S1 = (xp.empty_like(z), xp.empty_like(z)) if out is None else out
    n = z.shape[0]
    k = 1 if xp is not np else -(-z.size // VALUE_SLOPE_CHUNK)  # chunks of equal size
    with np.errstate(over="ignore"):  # exp((b − k_g)²) = inf far from every knot: W/inf = 0
        for j in range(k):
            r0, r1 = n * j // k, n * (j + 1) // k
            if r1 == r0:
                continue
            s0, s1 = S0[r0:r1], S1[r0:r1]
            a = z[r0:r1] - c
            a /= w
            b = a * math.sqrt(0.5)
            u, t = xp.empty_like(a), xp.empty_like(a)
            for g in range(nb):
                xp.subtract(b, kr[g], out=u)
                xp.multiply(u, u, out=u)
                xp.exp(u, out=u)
                if g == 0:  # the sums start with the first knot's terms
                    xp.divide(Wg[0], u, out=s0)
                    xp.multiply(s0, ka[0], out=s1)
                    continue
                xp.divide(Wg[g], u, out=t)
                s0 += t
                t *= ka[g]
                s1 += t
            a *= s0
            s1 -= a
            s1 /= w
    return S0, S1


@register("KANLayer.weighted_pointwise")
def weighted_pointwise(layer: Any, z: Any, d: Any) -> Any:
    """L = Σ_n d_n Σ_{o,i} φ_{i,o}(z[n,o,i]) and its parameter gradients from the sums S, T
    and β (module docstring); RBF bases only, else ``NotImplemented``."""
    if layer.basis.name != "RBF":
        return NotImplemented
    S, T = weighted_sums(layer.basis, z, d, layer.buffers["grid"], layer.tau, layer._need_dtau(True))
    W, g = layer.spline_weights(), layer.grads
    loss = (W * S).sum()
    layer.accumulate_weight_grads(S.transpose(1, 0, 2))
    if T is not None:
        g["tau"] += (W * T).sum()
    if layer.has_base_branch:
        N = z.shape[0]
        beta = (d @ layer.act(z)[0].reshape(N, -1)).reshape(z.shape[1:])  # (out, in)
        loss = loss + (beta * layer.params["w_base"].T).sum()
        g["w_base"] += beta.T
    return loss


@register("KANLayer.derivative_pointwise")
def derivative_pointwise(layer: Any, z: Any) -> Any:
    """φ and φ' of every function on its own input, z (N, out, in): RBF by
    ``value_and_slope``, other bases by the reference, in one row block per CPU thread (each
    value is computed alone, so the blocking changes no result). Inputs shared by every out
    (N, 1, in), and other bases on the GPU, take the reference (``NotImplemented``)."""
    xp = array_module(z)
    rbf = layer.basis.name == "RBF"
    if (z.shape[1] == 1 and layer.out_dim > 1) or not (rbf or xp is np):
        return NotImplemented
    W = layer.spline_weights()
    dtype = xp.result_type(z, W)
    f, df = xp.empty(z.shape, dtype=dtype), xp.empty(z.shape, dtype=dtype)
    reference = REFERENCES["KANLayer.derivative_pointwise"]

    def block(r0: int, r1: int) -> None:
        zb, fb, dfb = z[r0:r1], f[r0:r1], df[r0:r1]
        if not rbf:
            fb[...], dfb[...] = reference(layer, zb)
            return
        value_and_slope(layer.basis, zb, layer.buffers["grid"], layer.tau, W, out=(fb, dfb))
        if layer.has_base_branch:
            layer.add_base_slope(zb, fb, dfb)

    per_row = z[0].size or 1  # a block of at least ~2^12 values: thread start-up is paid back
    map_blocks(block, row_blocks(xp, z.shape[0], max(1, 4096 // per_row)))
    return f, df
