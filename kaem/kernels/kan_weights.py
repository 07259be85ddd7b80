"""The KAN layer's weight passes, built once per scope and run in cache-sized row blocks.

Drop-ins for ``KANLayer.spline_weights`` / ``network_weights`` (W = w_sp ⊙ c, reused while a
``fixed_parameters`` scope declares the parameters constant: a sampler's many evaluations,
a step's forwards and backwards) and for ``accumulate_weight_grads`` /
``network_weight_grads`` (∂L/∂W split into ∂L/∂c = ∂L/∂W ⊙ w_sp and ∂L/∂w_sp = Σ_g ∂L/∂W ⊙ c).

The coefficients are stored as (in, nb, out) (``kaem/nn/kan.py``), so on the (in, nb, out)
views of dW, c and ∂c every pass is contiguous and the sum over g adds rows. The passes run
over row blocks of i, one per CPU thread (``threads.py``), each in chunks of about
``SPLIT_ELEMENTS`` entries that stay in cache; ∂L/∂Wn is multiplied into a scratch array the
layer keeps across steps and split in place.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.kernels import register
from kaem.kernels.scope import current_scope
from kaem.kernels.threads import map_blocks, row_blocks

# the network form's weight passes (build of Wn, split of ∂L/∂W) work in row blocks of
# about this many entries, so that their few elementwise passes run in cache (CPU)
SPLIT_ELEMENTS = 1 << 17


def rows_per_block(row_size: int) -> int:
    """Rows of ``row_size`` entries that make one cache-sized block (at least one)."""
    return max(1, SPLIT_ELEMENTS // max(1, row_size))


def _state(layer: Any) -> dict:
    """The kernel's own per-layer state (cached W per form, the ∂L/∂Wn scratch)."""
    return layer.__dict__.setdefault("_kernel_state", {})


def _cached(layer: Any, form: str, build: Any) -> Any:
    """W of one form from ``build()``: once per ``fixed_parameters`` scope, on every call
    outside one (and then not kept)."""
    sid, state = current_scope(), _state(layer)
    hit = state.get(form)
    if sid is not None and hit is not None and hit[0] == sid:
        return hit[1]
    W = build()
    state[form] = (sid, W) if sid is not None else None
    return W


@register("KANLayer.spline_weights")
def spline_weights(layer: Any) -> Any:
    """W (out, in, nb), written in its own layout in one pass; cached per scope."""
    def build() -> Any:
        p = layer.params
        xp, c = array_module(p["coef"]), p["coef"]
        W = xp.empty((c.shape[1], c.shape[0], c.shape[2]), dtype=xp.result_type(c, p["w_sp"]))
        xp.multiply(c.transpose(1, 0, 2), p["w_sp"].T[:, :, None], out=W)
        return W
    return _cached(layer, "pointwise", build)


@register("KANLayer.network_weights")
def network_weights(layer: Any) -> Any:
    """Wn (in·nb, out), one pass per row block of i over the threads; cached per scope."""
    def build() -> Any:
        p = layer.params
        xp, c, w = array_module(p["coef"]), p["coef"], p["w_sp"]
        I, O, G = c.shape
        Wn = xp.empty((I, G, O), dtype=xp.result_type(c, w))
        map_blocks(lambda a, b: xp.multiply(c[a:b].transpose(0, 2, 1), w[a:b, None, :], out=Wn[a:b]),
                   row_blocks(xp, I, rows_per_block(O * G)))
        return Wn.reshape(I * G, O)
    return _cached(layer, "network", build)


def split_weight_grads(layer: Any, dW: Any, scratch: bool = False) -> None:
    """∂c += ∂W ⊙ w_sp and ∂w_sp += Σ_g ∂W ⊙ c for dW[i, o, g] (in, out, nb) of any strides, on
    the (in, nb, out) views in row blocks of i over the threads, each in cache-sized chunks; a
    dW in another layout is copied chunk by chunk first. ``scratch``: dW may be overwritten."""
    xp = array_module(dW)
    p, g = layer.params, layer.grads
    c, w, gc, gw = (p["coef"].transpose(0, 2, 1), p["w_sp"], g["coef"].transpose(0, 2, 1), g["w_sp"])
    d = dW.transpose(0, 2, 1)  # (in, nb, out)
    I, G, O = c.shape
    rows = rows_per_block(O * G) if xp is np else I
    in_place = scratch and d.flags.c_contiguous

    def run(a: int, b: int) -> None:
        t = None if in_place else xp.empty((min(rows, b - a), G, O), dtype=gc.dtype)
        u = xp.empty((min(rows, b - a), G, O), dtype=gc.dtype)
        for i0 in range(a, b, rows):  # cache-sized chunks of rows, not a loop over entries
            i1 = min(b, i0 + rows)
            ui = u[:i1 - i0]
            if in_place:
                ti = d[i0:i1]
            else:
                ti = t[:i1 - i0]
                ti[...] = d[i0:i1]
            xp.multiply(ti, c[i0:i1], out=ui)
            gw[i0:i1] += ui.sum(axis=1)
            ti *= w[i0:i1, None, :]
            gc[i0:i1] += ti

    map_blocks(run, row_blocks(xp, I, rows))


@register("KANLayer.accumulate_weight_grads")
def accumulate_weight_grads(layer: Any, dW: Any) -> None:
    """The split of ∂L/∂W (in, out, nb) in row blocks (``split_weight_grads``)."""
    split_weight_grads(layer, dW)


@register("KANLayer.network_weight_grads")
def network_weight_grads(layer: Any, B: Any, dy: Any) -> None:
    """∂L/∂Wn = Bᵀ dy into the layer's scratch array (reused across steps), split in place."""
    xp, state = array_module(dy), _state(layer)
    I, O, G = layer.params["coef"].shape
    shape, dtype = (I * G, O), xp.result_type(B, dy)
    buf = state.get("dWn")
    if buf is None or buf.shape != shape or buf.dtype != dtype or array_module(buf) is not xp:
        buf = state["dWn"] = xp.empty(shape, dtype=dtype)
    xp.matmul(B.reshape(B.shape[0], -1).T, dy, out=buf)
    split_weight_grads(layer, buf.reshape(I, G, O).transpose(0, 2, 1), scratch=True)
