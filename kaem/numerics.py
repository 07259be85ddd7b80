"""Small numerically careful helpers shared by the prior, the samplers and the estimators."""
from __future__ import annotations

from typing import Any

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


def lstsq_batched(A: Any, y: Any, ridge: float = 1e-15) -> Any:
    """Least squares per batch entry, argmin_c ‖A c − y‖² + λ‖c‖², for A (n, N, nb) and
    y (n, N, k) -> (n, nb, k): one batched solve of the normal equations

        (AᵀA + λ I) c = Aᵀy,    λ = max(nb·(eps · max(N, nb))², ridge) · tr(AᵀA)/nb   (per entry),

    in float64, eps that of A's dtype: ``ridge`` is λ relative to the mean eigenvalue of AᵀA
    (the default keeps designs with fewer samples than functions solvable: their
    minimum-norm solution is the small-ridge limit). One call for a whole layer on every device (cupy's
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
    rel = max((float(xp.finfo(A.dtype).eps) * max(A.shape[1:])) ** 2, ridge / nb)  # times tr(AᵀA)
    lam = xp.maximum(rel * xp.trace(G, axis1=1, axis2=2), xp.finfo(xp.float64).tiny)
    G += lam[:, None, None] * xp.eye(nb, dtype=xp.float64)
    return xp.linalg.solve(G, At @ y64).astype(A.dtype)
