"""The KAN generator: the "outer functions" of the Kolmogorov–Arnold reading (spec section 1).

    g = G(h)     a stack of KAN layers, widths Q -> ... -> D, h (N, Q) -> g (N, D)

The output activation and the noise injection belong to the likelihood
(``kaem/likelihood.py``), which receives the pre-activation g (N, D).
"""
from __future__ import annotations

from typing import Any, Sequence

from ..backend import Backend
from ..grid_update import update_layer_grid
from ..kan import KANLayer, KANSpec


class KANGenerator:
    """A stack of ``KANLayer``s mapping h (N, widths[0]) to g (N, widths[-1]).

    Parameter, gradient and buffer names are ``<layer index>.<name>`` (``0.w_sp``, ``1.grid``).
    """

    def __init__(self, be: Backend, widths: Sequence[int], spec: KANSpec, rng: Any) -> None:
        self.widths = tuple(int(w) for w in widths)
        self.layers = [KANLayer(be, i, o, spec, rng) for i, o in zip(self.widths[:-1], self.widths[1:])]

    @classmethod
    def from_config(cls, cfg: Any, be: Backend, rng: Any, in_dim: int, data_shape: tuple[int, ...]) -> "KANGenerator":
        """GeneratorModel.widths (first = Q) with the data dimension D = C·H·W appended."""
        g = cfg["GeneratorModel"]
        D = 1
        for d in data_shape:
            D *= int(d)
        return cls(be, list(g["widths"]) + [D], KANSpec.from_section(g), rng)

    # ---- flat views ---------------------------------------------------------------------
    def _flat(self, attr: str) -> dict[str, Any]:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in getattr(layer, attr).items() if v is not None}

    @property
    def params(self) -> dict[str, Any]:
        return self._flat("params")

    @property
    def grads(self) -> dict[str, Any]:
        return self._flat("grads")

    @property
    def buffers(self) -> dict[str, Any]:
        return self._flat("buffers")

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    # ---- forward / backward -------------------------------------------------------------
    def forward(self, h: Any, cache: bool = True) -> Any:
        """h (N, Q) -> g (N, D), the pre-activation output."""
        for layer in self.layers:
            h = layer.forward(h, cache=cache)
        return h

    def backward(self, dg: Any, need_dh: bool = True, need_params: bool = True) -> Any:
        """dg (N, D) -> dh (N, Q); parameter gradients accumulate in each layer unless
        ``need_params`` is False (samplers need only dh)."""
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            dg = self.layers[i].backward(dg, need_dx=need_dh or i > 0, need_params=need_params)
        return dg

    def update_grids(self, h: Any, ratio: float) -> bool:
        """Grid updating (spec 2.1): each layer is refitted on its own inputs, propagated from
        h (N, Q) through the (already updated) layers before it. Returns whether any moved."""
        changed = False
        for layer in self.layers:
            changed |= update_layer_grid(layer, h, ratio)
            h = layer.forward(h, cache=False)
        return changed
