"""Importance weights, effective sample size and resampling (method §4.1).

All functions work on R rows of S weights at once (one row per datum), with no loop over
rows or samples. A resampler returns integer counts (R, S) with Σ_s counts[r, s] = S and
E[counts[r, s]] = S · w[r, s]. Every array has a fixed shape (no bincount, no nonzero), so
nothing waits for the device: counts come from sorted uniforms and the row CDFs by one
searchsorted, counts[r, s] = #{i : cdf[r, s−1] ≤ u[r, i] < cdf[r, s]}.
"""
from __future__ import annotations

from typing import Any, Callable

from kaem.backend import array_module
from kaem.numerics import rowwise_searchsorted, softmax


def ess(w: Any) -> Any:
    """Effective sample size 1 / Σ_s w[r, s]² of normalised weights; (R, S) -> (R,)."""
    return 1.0 / (w * w).sum(axis=1)


_UNUSED = 1.75  # a uniform that no bin counts (the last bin ends at 1.5; all values stay < 2)


def _cdf(w: Any) -> Any:
    xp = array_module(w)
    cdf = xp.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    return cdf


def _counts(w: Any, u: Any) -> Any:
    """Counts (R, S) of the sorted points u (R, n) (values in [0, 1), or ``_UNUSED``) in the
    bins of the row CDFs of w (R, S): bin s is [cdf_{s−1}, cdf_s), the last bin reaches 1.5
    so that rounding of the CDF's end loses no point."""
    xp = array_module(w)
    edges = _cdf(w)
    edges[:, -1] = 1.5
    below = rowwise_searchsorted(u, edges, side="left")  # #{i : u_i < cdf_s}, (R, S)
    return xp.diff(below, axis=1, prepend=0)


def _inverse_cdf(w: Any, u: Any) -> Any:
    """Indices of the points u (R, n) under the row CDFs of w (R, S)."""
    xp = array_module(w)
    return xp.clip(rowwise_searchsorted(_cdf(w), u, side="right"), 0, w.shape[1] - 1)


def _systematic_points(w: Any, n: int, rng: Any) -> Any:
    """u_i = (U + i)/n, i = 0..n-1, one U per row: (R, n), sorted."""
    xp = array_module(w)
    return (rng.random((w.shape[0], 1)) + xp.arange(n)[None, :]) / n


def systematic_indices(w: Any, n: int, rng: Any) -> Any:
    """n indices per row drawn systematically: u_i = (U + i)/n, i = 0..n-1; -> (R, n)."""
    return _inverse_cdf(w, _systematic_points(w, n, rng))


def systematic(w: Any, rng: Any) -> Any:
    """One uniform per row: u_i = (U + i)/S, i = 0..S-1."""
    return _counts(w, _systematic_points(w, w.shape[1], rng))


def stratified(w: Any, rng: Any) -> Any:
    """One uniform per stratum: u_i = (U_i + i)/S (sorted by construction)."""
    xp = array_module(w)
    R, S = w.shape
    return _counts(w, (rng.random((R, S)) + xp.arange(S)[None, :]) / S)


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
    keep = xp.arange(S)[None, :] < n_rest[:, None]  # use the first n_rest draws of each row
    u = xp.sort(xp.where(keep, rng.random((R, S)), _UNUSED), axis=1)
    return base.astype(xp.int64) + _counts(rest, u)


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
