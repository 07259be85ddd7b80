"""Adaptive grid updating (spec section 2.1, pykan / efficient-kan style).

For a grid-based layer and a batch of its inputs:
1. evaluate the spline part of every function on the samples, s = Σ_g c_g B_g(x);
2. per input dimension, adaptive grid = sample quantiles at G+1 evenly spaced ranks,
   uniform grid = G+1 evenly spaced points on [min, max];
3. new grid = r·uniform + (1−r)·adaptive (r = ``grid_update_ratio``), extended as the
   basis needs (B-splines: k knots each side);
4. refit c by least squares so that Σ_g c'_g B'_g(x) ≈ s on the samples. The base
   branch and w_sp are untouched, so the functions φ are preserved up to the fit error.
   RBF widths follow automatically (they are computed from the grid).

FFT and Chebyshev layers have no grid and are left alone. The prior's layer is used
pointwise: input p's grid is fitted to the samples z[:, :, p] of all its Q functions, and
each function (q, p) is refitted on its own samples.
"""
from __future__ import annotations

import math
from typing import Any

from .backend import array_module
from .kan import KANLayer, parameters_changed
from .numerics import lstsq_batched

DOMAIN_MARGIN = 0.1  # the prior's domain = grid span widened by 10% of its range each side


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
    grid, tau, coef = layer.buffers["grid"], layer.tau, layer.params["coef"]
    spline = (basis.evaluate(x, grid, tau)[:, :, None, :] * coef[None]).sum(-1)  # (N, in, out)
    new_grid = basis.grid_from_points(blended_grid(x, basis.G, ratio))
    B = basis.evaluate(x, new_grid, tau).transpose(1, 0, 2)  # (in, N, nb)
    c = lstsq_batched(B, spline.transpose(1, 0, 2))  # (in, nb, out)
    coef[...] = c.transpose(0, 2, 1)
    grid[...] = new_grid
    parameters_changed()
    return True


def update_pointwise_grid(layer: KANLayer, z: Any, ratio: float) -> bool:
    """Refit the prior's layer (pointwise form) to samples z (N, out, in) = (N, Q, P)."""
    basis = layer.basis
    if not basis.uses_grid:
        return False
    N, Q, P = z.shape
    grid, tau, coef = layer.buffers["grid"], layer.tau, layer.params["coef"]  # coef (P, Q, nb)
    spline = (basis.evaluate(z, grid, tau) * coef.transpose(1, 0, 2)[None]).sum(-1)  # (N, Q, P)
    new_grid = basis.grid_from_points(blended_grid(z.reshape(N * Q, P), basis.G, ratio))
    B = basis.evaluate(z, new_grid, tau)  # (N, Q, P, nb)
    A = B.transpose(2, 1, 0, 3).reshape(P * Q, N, -1)  # one design per function (p, q)
    c = lstsq_batched(A, spline.transpose(2, 1, 0).reshape(P * Q, N, 1))
    coef[...] = c.reshape(P, Q, -1)
    grid[...] = new_grid
    parameters_changed()
    return True


def grid_update_due(iteration: int, last_update: int, frequency: int, decay: float) -> bool:
    """True when floor(frequency · (2 − decay)^iteration) iterations have passed since the
    last update: the interval grows as training goes on (decay < 1)."""
    growth = iteration * math.log(2 - decay)
    interval = max(1, math.floor(frequency * math.exp(min(growth, 60.0))))  # no float overflow
    return iteration - last_update >= interval


def prior_domain_from_grid(points: Any) -> Any:
    """New integration domain (P, 2) from the prior's grid points (P, G+1): the span widened by
    ``DOMAIN_MARGIN`` of its range on each side. (The reference multiplies min and max by
    0.9 and 1.1, which shrinks the domain when min < 0 — spec 7.2.)"""
    xp = array_module(points)
    lo, hi = points[:, 0], points[:, -1]
    pad = DOMAIN_MARGIN * (hi - lo)
    return xp.stack([lo - pad, hi + pad], axis=1)
