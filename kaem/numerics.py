"""Small numerically careful helpers shared by the prior, the samplers and the estimators."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from kaem.backend import array_module


def logsumexp(a: Any, axis: int = -1) -> Any:
    """log Σ exp(a) along ``axis`` without overflow (-inf rows stay -inf)."""
    xp = array_module(a)
    m = a.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    return xp.log(xp.exp(a - m).sum(axis=axis)) + m.squeeze(axis)


def softmax(a: Any, axis: int = -1) -> Any:
    """exp(a) / Σ exp(a) along ``axis``."""
    xp = array_module(a)
    e = xp.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def rowwise_searchsorted(cdf: Any, u: Any, side: str = "right") -> Any:
    """For each row r, indices j with cdf[r, j-1] <= u[r, n] < cdf[r, j] (``side='right'``).

    cdf: (R, M) non-decreasing rows; u: (R, n); all values in [0, 2).
    One flat ``searchsorted`` instead of a loop over rows: row r is shifted by 2r so the
    rows do not overlap. Done in float64 so the shift costs no resolution.
    """
    xp = array_module(cdf)
    R, M = cdf.shape
    shift = 2.0 * xp.arange(R, dtype=xp.float64)[:, None]
    flat = (cdf.astype(xp.float64) + shift).ravel()
    idx = xp.searchsorted(flat, (u.astype(xp.float64) + shift).ravel(), side=side)
    return idx.reshape(u.shape) - M * xp.arange(R)[:, None]


def rowwise_interp(u: Any, cdf: Any, values: Any, rows: Any = None) -> Any:
    """Row-wise inverse of a piecewise-linear CDF: z[r, n] with cdf_r(z) = u[r, n].

    u: (R, n) in [0, 1]; cdf: (R, M) non-decreasing, from 0 to 1; values: (R, M) the
    abscissae of the CDF knots. One flat ``interp`` over all rows, each row shifted by 2r
    (in float64, so the shift costs no resolution); u outside [0, 1] clamps to the ends.
    Fastest with each row of u sorted: every search then starts where the last one ended.
    With ``rows`` (integers, any shape that broadcasts against u) u[j] is looked up in row
    rows[j], and z has the broadcast shape: queries shared by several rows are passed once.
    z is float64.
    """
    xp = array_module(u)
    shift = 2.0 * xp.arange(cdf.shape[0], dtype=xp.float64)[:, None]
    row_shift = shift if rows is None else 2.0 * rows.astype(xp.float64)
    uq = xp.clip(u.astype(xp.float64), 0.0, 1.0) + row_shift  # clipped before broadcasting
    z = xp.interp(uq.ravel(), (cdf + shift).ravel(), values.ravel())  # float64 by the shift
    return z.reshape(uq.shape)


def uniform_(rng: Any, out: Any) -> Any:
    """Fill ``out`` with U[0, 1) draws in place.

    float32 on numpy: from the bit generator's raw 64-bit words, two 23-bit uniforms per
    word (mantissa bits under the exponent of 1.0, minus 1): about 3× faster here than
    ``Generator.random`` for float32, which draws one 32-bit value at a time. Other dtypes
    and devices use ``rng.random``."""
    xp = array_module(out)
    raw = getattr(getattr(rng, "bit_generator", None), "random_raw", None)
    if xp is not np or out.dtype != np.float32 or raw is None or not out.flags.c_contiguous:
        return rng.random(out.shape, dtype=out.dtype, out=out)  # cupy needs the size with out
    flat = out.reshape(-1)
    bits = flat.view(np.uint32)
    words = raw((flat.shape[0] + 1) // 2).view(np.uint32)[:flat.shape[0]]
    np.right_shift(words, 9, out=bits)
    bits |= 0x3F800000  # 1.0 ≤ value < 2.0
    flat -= 1.0
    return out


def standard_normal_(rng: Any, out: Any, scale: float = 1.0) -> Any:
    """Fill ``out`` with N(0, scale²) draws by the Box–Muller transform, in place.

    Normals 2j and 2j+1 come from uniforms 2j and 2j+1 (r = √(−2 log(1 − u_{2j})),
    θ = 2π u_{2j+1}: r cos θ and r sin θ), so the draws of consecutive blocks of even size
    are the draws of the whole array: a blocked kernel and the reference get the same
    numbers (``normal_streams``). Faster than numpy's float32 ziggurat on CPU (about 4 vs
    13 ns a draw here, with the uniforms from :func:`uniform_`). With 23-bit uniforms the
    radius is at most sqrt(2·23·ln 2) ≈ 5.6σ, a truncation of P < 3e-8. ``scale`` is folded
    into the radius (no extra pass).
    """
    xp = array_module(out)
    flat = out.reshape(-1)
    n = flat.shape[0]
    half = (n + 1) // 2
    u = uniform_(rng, xp.empty(2 * half, dtype=out.dtype)).reshape(half, 2)
    r = xp.subtract(1, u[:, 0])  # (0, 1]: log stays finite
    xp.log(r, out=r)
    r *= -2 * scale * scale
    xp.sqrt(r, out=r)
    if scale < 0:
        r *= -1
    th = u[:, 1] * (2 * math.pi)
    pairs = flat[:2 * (n // 2)].reshape(-1, 2)
    c = xp.cos(th)
    c *= r
    pairs[:, 0] = c[:pairs.shape[0]]
    if n % 2:
        flat[-1] = c[-1]
    xp.sin(th[:pairs.shape[0]], out=c[:pairs.shape[0]])
    c[:pairs.shape[0]] *= r[:pairs.shape[0]]
    pairs[:, 1] = c[:pairs.shape[0]]
    return out


def lstsq_batched(A: Any, y: Any) -> Any:
    """Least squares per batch entry, argmin_c ‖A c − y‖² + λ‖c‖², for A (n, N, nb) and
    y (n, N, k) -> (n, nb, k): one batched solve of the normal equations

        (AᵀA + λ I) c = Aᵀy,    λ = max((eps · max(N, nb))², 1e-15) · tr(AᵀA)   (per entry),

    in float64, eps that of A's dtype (the floor keeps float64 designs with fewer samples
    than functions solvable: their minimum-norm solution is the small-ridge limit). One call for a whole layer on every device (cupy's
    batched SVD is only fast up to 32×32 and otherwise runs one SVD per function). λ plays
    the part of numpy.linalg.lstsq's cutoff of singular values below eps·max(N, nb)·s_max:
    directions the data cannot resolve at A's precision are damped instead of fitted to
    rounding noise (float32 designs from overlapping RBF/RSWAF bases have them), a basis
    function no sample reaches (a zero column) gets coefficient 0, and float64 keeps the
    squared condition number of the normal equations harmless."""
    xp = array_module(A)
    A64, y64 = A.astype(xp.float64), y.astype(xp.float64)
    At = A64.transpose(0, 2, 1)
    G = At @ A64  # (n, nb, nb)
    nb = G.shape[-1]
    rel = max((float(xp.finfo(A.dtype).eps) * max(A.shape[1:])) ** 2, 1e-15)
    lam = xp.maximum(rel * xp.trace(G, axis1=1, axis2=2), xp.finfo(xp.float64).tiny)
    G += lam[:, None, None] * xp.eye(nb, dtype=xp.float64)
    return xp.linalg.solve(G, At @ y64).astype(A.dtype)


def normal_streams(rng: Any, sizes: list[int], dtype: Any, at: list[int]) -> list[Any] | None:
    """Generators for drawing a sequence of blocks with :func:`standard_normal_` out of order.

    Block j has ``sizes[j]`` entries of ``dtype``; drawn one after another from ``rng``, block
    j would start after the raw 64-bit words of blocks 0..j−1. Returns one generator per
    index in ``at``, positioned at that block's start (by ``advance``, not by drawing), and
    moves ``rng`` past every block: each generator drawing its blocks in order then yields
    exactly the numbers of the sequential draw, whatever the split. None (``rng`` untouched)
    where the word count is not fixed: not a numpy generator with an advanceable bit
    generator (PCG64), or a dtype other than float32 (⌈n/2⌉ words, the raw-bit uniforms of
    :func:`uniform_`) and float64 (one word per uniform).
    """
    bg = getattr(rng, "bit_generator", None)
    dtype = np.dtype(dtype)
    if not isinstance(rng, np.random.Generator) or not hasattr(bg, "advance") or dtype.kind != "f" \
            or dtype.itemsize not in (4, 8):
        return None
    per_uniform_pair = 1 if dtype.itemsize == 4 else 2  # standard_normal_ draws ⌈n/2⌉ uniform pairs
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + per_uniform_pair * ((n + 1) // 2))
    out = []
    for j in at:
        child = type(bg)(0)  # its seed is replaced by rng's state just below
        child.state = bg.state
        child.advance(starts[j])
        out.append(np.random.Generator(child))
    bg.advance(starts[-1])
    return out
