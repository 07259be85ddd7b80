"""Samples that carry no weight are dropped before the parameter gradients (CPU).

After importance resampling about 40% of the S latent samples carry no weight in any row of
the batch (FMNIST, IS), and such a sample adds exactly nothing to any parameter gradient.
Two drop-ins, exact up to the order of the sums:

* ``LayerStack.backward`` (a generator's backward) without ``need_dh``: the rows of dg that
  are all zero are dropped (``live_rows``) and every layer's forward cache keeps only the
  others (``keep_rows``);
* ``QuadratureDensities.weighted_log_energy`` (a prior's loss): the samples with d_n = 0
  (``weighted_rows``).

On the GPU every sample is kept: counting them would be a device-to-host sync.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.kernels import REFERENCES, register


def live_rows(stack: Any, dg: Any) -> Any:
    """Indices of the rows of dg (N, ...) with a non-zero entry, or None for all of them:
    also None on the GPU and when a layer couples the rows of a batch (batch norm: a row with
    zero dg still moves the others' gradients) or cannot drop rows from its cache
    (``row_independent`` unset)."""
    if array_module(dg) is not np or not all(getattr(layer, "row_independent", False) for layer in stack.layers):
        return None
    live = dg.reshape(dg.shape[0], -1).any(axis=1)
    return None if live.all() else np.flatnonzero(live)


@register("LayerStack.backward")
def backward(stack: Any, dg: Any, need_dh: bool = True, need_params: bool = True) -> Any:
    """The generator's backward on the live rows of dg only, when only parameter gradients
    are wanted."""
    rows = live_rows(stack, dg) if need_params and not need_dh else None
    if rows is None:
        return NotImplemented
    if rows.size == 0:
        return None  # every gradient is exactly zero
    for layer in stack.layers:
        layer.keep_rows(rows)
    return REFERENCES["LayerStack.backward"](stack, dg[rows], need_dh, need_params)


def weighted_rows(z: Any, d: Any) -> tuple[Any, Any]:
    """z (N, ...) and d (N,) without the samples whose weight d_n is 0 (CPU only)."""
    if array_module(d) is not np:
        return z, d
    live = d != 0
    if live.all() or not live.any():
        return z, d
    return z[live], d[live]


@register("QuadratureDensities.weighted_log_energy")
def weighted_log_energy(prior: Any, z: Any, d: Any) -> Any:
    """The prior's weighted loss on the samples with a non-zero weight."""
    zl, dl = weighted_rows(z, d)
    if zl is z:
        return NotImplemented
    return REFERENCES["QuadratureDensities.weighted_log_energy"](prior, zl, dl)
