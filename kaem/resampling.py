"""Importance weights, effective sample size and resampling (spec section 4.1).

All functions work on R rows of S weights at once (one row per datum), with no loop over
rows or samples. A resampler returns integer counts (R, S) with Σ_s counts[r, s] = S and
E[counts[r, s]] = S · w[r, s].
"""
from __future__ import annotations

from typing import Any, Callable

from .backend import array_module
from .numerics import rowwise_searchsorted, softmax


def ess(w: Any) -> Any:
    """Effective sample size 1 / Σ_s w[r, s]² of normalised weights; (R, S) -> (R,)."""
    return 1.0 / (w * w).sum(axis=1)


def _counts_from_indices(idx: Any, S: int) -> Any:
    """idx (R, n) in [0, S) -> counts (R, S) by one flat bincount."""
    xp = array_module(idx)
    R = idx.shape[0]
    flat = (idx + S * xp.arange(R)[:, None]).ravel()
    return xp.bincount(flat, minlength=R * S).reshape(R, S)


def _inverse_cdf(w: Any, u: Any) -> Any:
    """Indices of the points u (R, n) under the row CDFs of w (R, S)."""
    xp = array_module(w)
    cdf = xp.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    return xp.clip(rowwise_searchsorted(cdf, u, side="right"), 0, w.shape[1] - 1)


def systematic_indices(w: Any, n: int, rng: Any) -> Any:
    """n indices per row drawn systematically: u_i = (U + i)/n, i = 0..n-1; -> (R, n)."""
    xp = array_module(w)
    u = (rng.random((w.shape[0], 1)) + xp.arange(n)[None, :]) / n
    return _inverse_cdf(w, u)


def systematic(w: Any, rng: Any) -> Any:
    """One uniform per row: u_i = (U + i)/S, i = 0..S-1."""
    return _counts_from_indices(systematic_indices(w, w.shape[1], rng), w.shape[1])


def stratified(w: Any, rng: Any) -> Any:
    """One uniform per stratum: u_i = (U_i + i)/S."""
    xp = array_module(w)
    R, S = w.shape
    u = (rng.random((R, S)) + xp.arange(S)[None, :]) / S
    return _counts_from_indices(_inverse_cdf(w, u), S)


def residual(w: Any, rng: Any) -> Any:
    """floor(S·w) deterministic copies, the remaining S − Σ floor(S·w) drawn multinomially
    from the residual weights S·w − floor(S·w)."""
    xp = array_module(w)
    R, S = w.shape
    base = xp.floor(S * w)
    rest = S * w - base
    n_rest = S - base.sum(axis=1).astype(xp.int64)  # (R,), 0 <= n_rest < S
    total = rest.sum(axis=1, keepdims=True)
    rest = xp.where(total > 0, rest, 1.0)  # rows with no remainder draw nothing below
    idx = _inverse_cdf(rest, rng.random((R, S)))
    keep = xp.arange(S)[None, :] < n_rest[:, None]  # use the first n_rest draws of each row
    extra = _counts_from_indices(xp.where(keep, idx, 0), S)
    extra[:, 0] -= (~keep).sum(axis=1)  # remove the placeholders counted at index 0
    return base.astype(xp.int64) + extra


RESAMPLERS: dict[str, Callable[[Any, Any], Any]] = {
    "residual": residual, "systematic": systematic, "stratified": stratified,
}


def importance_weights(ll: Any, threshold: float, resampler: str, rng: Any) -> tuple[Any, Any, Any]:
    """Self-normalised weights w[b, :] = softmax_s(ll[b, :]), resampled where ESS is low.

    Rows with ESS_b < threshold·S are replaced by counts/S from the resampler: uniform
    weight per resampled index (the textbook choice; the reference re-applies a softmax).
    Returns (weights (B, S) summing to 1 per row, ess (B,), resampled (B,) bool).
    """
    xp = array_module(ll)
    if resampler not in RESAMPLERS:
        raise ValueError(f"unknown resampler {resampler!r}; valid: {', '.join(RESAMPLERS)}")
    w = softmax(ll, axis=1)
    e = ess(w)
    S = ll.shape[1]
    low = e < threshold * S
    # every row is resampled and then selected: no data-dependent branch, so no device sync
    counts = RESAMPLERS[resampler](w, rng)
    w = xp.where(low[:, None], counts.astype(w.dtype) / S, w)
    return w, e, low
