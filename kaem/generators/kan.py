"""The KAN generator: the "outer functions" of the Kolmogorov–Arnold reading (method §1).

    g = G(h)     a stack of KAN layers, widths Q -> ... -> D, h (N, Q) -> g (N, D)

The output activation and the noise injection belong to the likelihood
(``kaem/likelihood.py``), which receives the pre-activation g (N, D).
"""
from __future__ import annotations

from typing import Any, Sequence

from kaem.backend import Backend
from kaem.nn.grid_update import update_layer_grid
from kaem.nn.kan import KANLayer, KANSpec
from kaem.generators.base import LayerStack


class KANGenerator(LayerStack):
    """A stack of ``KANLayer``s mapping h (N, widths[0]) to g (N, widths[-1]).

    Parameter, gradient and buffer names are ``<layer index>.<name>`` (``0.w_sp``, ``1.grid``);
    forward and backward run layer by layer (``LayerStack``).
    """

    def __init__(self, be: Backend, widths: Sequence[int], spec: KANSpec, rng: Any) -> None:
        self.widths = tuple(int(w) for w in widths)
        self.layers = [KANLayer(be, i, o, spec, rng) for i, o in zip(self.widths[:-1], self.widths[1:])]

    def update_grids(self, h: Any, ratio: float) -> bool:
        """Grid updating (method §2.1): each layer is refitted on its own inputs, propagated from
        h (N, Q) through the (already updated) layers before it. Returns whether any moved."""
        changed = False
        for layer in self.layers:
            changed |= update_layer_grid(layer, h, ratio)
            h = layer.forward(h, cache=False)
        return changed
