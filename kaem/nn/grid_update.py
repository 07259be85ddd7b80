"""Adaptive grid updating (method §2.1, pykan / efficient-kan style).

For a grid-based layer and a batch of its inputs:
1. evaluate the spline part of every function on the samples, s = Σ_g c_g B_g(x);
2. per input dimension, adaptive grid = sample quantiles at G+1 evenly spaced ranks,
   uniform grid = G+1 evenly spaced points on [min, max];
3. new grid = r·uniform + (1−r)·adaptive (r = ``grid_update_ratio``), extended as the
   basis needs (B-splines: k knots each side);
4. refit c by ridge-regularised least squares (``REFIT_RIDGE``) so that
   Σ_g c'_g B'_g(x) ≈ s on the samples. The base branch and w_sp are untouched, so the
   functions φ are preserved up to the fit error. RBF widths follow automatically (they are
   computed from the grid).

FFT and Chebyshev layers have no grid and are left alone. The prior's layer is used
pointwise: input p's grid is fitted to the samples z[:, :, p] of all its Q functions, and
each function (q, p) is refitted on its own samples.

Degenerate inputs never break training: an input dimension whose samples are non-finite
or span no resolvable width (all draws the same point: an RBF width of zero, repeated
B-spline knots) keeps its old grid and coefficients, and so does every dimension when the
SVD fails; each case gives a ``GridUpdateWarning``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.nn.kan import KANLayer, parameters_changed
from kaem.numerics import lstsq_batched

DOMAIN_MARGIN = 0.1  # the prior's domain = grid span widened by 10% of its range each side
# λ of the refit relative to the mean eigenvalue of AᵀA (``lstsq_batched``): overlapping RBF bumps
# on knots that cluster where the samples do make AᵀA nearly singular, and a least-squares fit
# then grows coefficients of 1e4 whose directions the samples barely constrain, and turns
# rounding differences of 1e-16 into differences of 1e-4 in the functions. This ridge bounds
# the condition number by about nb·1e6 at a cost of at most ½·√REFIT_RIDGE ≈ 5e-4 of ‖c‖·√mean
# eigenvalue in the refitted values (``tests/test_grid_update.py`` checks that bound).
REFIT_RIDGE = 1e-5
MIN_SPACING_ULPS = 100  # a new grid's mean spacing must exceed this many float ulps of its position


class GridUpdateWarning(UserWarning):
    """A grid update kept (part of) the old grid because its samples were degenerate."""


def usable_grid_rows(points: Any) -> Any:
    """(in,) bool: rows of G+1 grid points (in, G+1) that are finite and resolvably wide,
    (last − first)/G > MIN_SPACING_ULPS · eps · max(1, |first|, |last|)."""
    xp = array_module(points)
    lo, hi = points[:, 0], points[:, -1]
    G = points.shape[1] - 1
    scale = xp.maximum(1.0, xp.maximum(xp.abs(lo), xp.abs(hi)))
    finite = xp.isfinite(points).all(axis=1)
    wide = (hi - lo) / G > MIN_SPACING_ULPS * xp.finfo(points.dtype).eps * xp.where(finite, scale, 1.0)
    return finite & wide


def _refit(layer: KANLayer, points: Any, ok: Any, design: Any, target: Any, what: str) -> Any:
    """New grid and least-squares coefficients for the usable rows ``ok`` (in,) of the grid
    ``points`` (in, G+1); the other rows keep the old grid.

    design(grid) -> the batched design matrices A (n, N, nb), target (n, N, k). Returns
    (new grid (in, n_knots), coefficients (n, nb, k)), or None (with a warning) when no row
    is usable or the SVD fails; warns about the rows kept unchanged."""
    xp = array_module(points)
    n_bad = int((~ok).sum())
    if n_bad == points.shape[0]:
        warnings.warn(f"grid update of the {what}: the samples of every input dimension are degenerate "
                      "(non-finite or all the same point); the old grids are kept", GridUpdateWarning)
        return None
    grid = layer.buffers["grid"]
    new_grid = xp.where(ok[:, None], layer.basis.grid_from_points(xp.where(ok[:, None], points, 0)), grid)
    try:
        c = lstsq_batched(design(new_grid), target, ridge=REFIT_RIDGE)
    except np.linalg.LinAlgError:
        warnings.warn(f"grid update of the {what}: the least-squares refit did not converge (SVD); the old "
                      "grids are kept", GridUpdateWarning)
        return None
    if n_bad:
        warnings.warn(f"grid update of the {what}: {n_bad} of {points.shape[0]} input dimension(s) have "
                      "degenerate samples (non-finite or all the same point) and keep their old grid",
                      GridUpdateWarning)
    return new_grid, c


def blended_grid(x: Any, G: int, ratio: float) -> Any:
    """G+1 points per input dimension from samples x (N, in) -> (in, G+1).

    Quantiles at ranks round(j·(N−1)/G), j = 0..G, of the sorted samples, blended with the
    uniform grid on [min, max] by ``ratio``.
    """
    xp = array_module(x)
    xs = xp.sort(x, axis=0)  # (N, in)
    N = xs.shape[0]
    ranks = xp.asarray([round(j * (N - 1) / G) for j in range(G + 1)])
    adaptive = xs[ranks].T  # (in, G+1)
    lo, hi = xs[0], xs[-1]
    uniform = lo[:, None] + (hi - lo)[:, None] * xp.linspace(0, 1, G + 1, dtype=x.dtype)[None, :]
    return ratio * uniform + (1 - ratio) * adaptive


def update_layer_grid(layer: KANLayer, x: Any, ratio: float) -> bool:
    """Refit a network-form layer to inputs x (N, in); returns whether anything changed."""
    basis = layer.basis
    if not basis.uses_grid:
        return False
    xp = array_module(x)
    grid, tau, coef = layer.buffers["grid"], layer.tau, layer.params["coef"]
    pts = blended_grid(x, basis.G, ratio)
    ok = usable_grid_rows(pts)
    x = xp.where(ok[None, :], x, 0)  # degenerate dimensions: harmless inputs, their fit is discarded
    # the current functions' spline part on x, spline[i, n, o] = Σ_g B_g(x[n, i]) c[i, o, g]: a
    # matmul batched over i (a broadcast product would form an (N, in, out, nb) temporary)
    spline = basis.evaluate(x, grid, tau).transpose(1, 0, 2) @ coef.transpose(0, 2, 1)  # (in, N, out)
    fit = _refit(layer, pts, ok, lambda g: basis.evaluate(x, g, tau).transpose(1, 0, 2),  # (in, N, nb)
                 spline, "generator")
    if fit is None:
        return False
    new_grid, c = fit  # c (in, nb, out)
    ok &= xp.isfinite(c).all(axis=(1, 2))
    coef[...] = xp.where(ok[:, None, None], c.transpose(0, 2, 1), coef)
    grid[...] = xp.where(ok[:, None], new_grid, grid)
    parameters_changed()
    return bool(ok.any())


def update_pointwise_grid(layer: KANLayer, z: Any, ratio: float) -> bool:
    """Refit the prior's layer (pointwise form) to samples z (N, out, in) = (N, Q, P)."""
    basis = layer.basis
    if not basis.uses_grid:
        return False
    xp = array_module(z)
    N, Q, P = z.shape
    grid, tau, coef = layer.buffers["grid"], layer.tau, layer.params["coef"]  # coef (P, Q, nb)
    pts = blended_grid(z.reshape(N * Q, P), basis.G, ratio)
    ok = usable_grid_rows(pts)
    z = xp.where(ok, z, 0)  # degenerate dimensions: harmless inputs, their fit is discarded
    spline = (basis.evaluate(z, grid, tau) * coef.transpose(1, 0, 2)[None]).sum(-1)  # (N, Q, P)

    def design(g: Any) -> Any:  # one design per function (p, q): (P·Q, N, nb)
        return basis.evaluate(z, g, tau).transpose(2, 1, 0, 3).reshape(P * Q, N, -1)

    fit = _refit(layer, pts, ok, design, spline.transpose(2, 1, 0).reshape(P * Q, N, 1), "prior")
    if fit is None:
        return False
    new_grid, c = fit
    c = c.reshape(P, Q, -1)
    ok &= xp.isfinite(c).all(axis=(1, 2))
    coef[...] = xp.where(ok[:, None, None], c, coef)
    grid[...] = xp.where(ok[:, None], new_grid, grid)
    parameters_changed()
    return bool(ok.any())


def grid_update_due(iteration: int, last_update: int, frequency: int, decay: float) -> bool:
    """True when floor(frequency · (2 − decay)^iteration) iterations have passed since the
    last update: the interval grows as training goes on (decay < 1)."""
    growth = iteration * math.log(2 - decay)
    interval = max(1, math.floor(frequency * math.exp(min(growth, 60.0))))  # no float overflow
    return iteration - last_update >= interval


def prior_domain_from_grid(points: Any) -> Any:
    """New integration domain (P, 2) from the prior's grid points (P, G+1): the span widened by
    ``DOMAIN_MARGIN`` of its range on each side. (The reference multiplies min and max by
    0.9 and 1.1, which shrinks the domain when min < 0 — method §7.2.)"""
    xp = array_module(points)
    lo, hi = points[:, 0], points[:, -1]
    pad = DOMAIN_MARGIN * (hi - lo)
    return xp.stack([lo - pad, hi + pad], axis=1)
