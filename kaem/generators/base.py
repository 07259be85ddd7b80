"""What every generator shares: flat parameter/gradient/buffer views over a list of layers,
and the train/eval mode flag.

A generator keeps its layers in ``self.layers``; each layer has ``params``, ``grads`` and
``buffers`` dicts (name -> live array, or None for an absent buffer) and ``zero_grad()``.
The flat names are ``<layer index>.<name>`` (``0.w``, ``1.grid``).
"""
from __future__ import annotations

from typing import Any

from kaem.kernels import replaceable


class LayerStack:
    """Flat views, the mode flag and a sequential forward/backward for a generator built
    from ``self.layers``.

    ``training`` (default True) selects batch statistics in batch norm (and updates their
    running averages); False uses the running averages, as sampling and evaluation must.
    Generators without such layers ignore it.
    """

    layers: list
    training: bool = True

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

    def forward(self, h: Any, cache: bool = True) -> Any:
        """h (N, Q) -> g (N, D) through the layers in order (each ``layer.forward(x, cache)``)."""
        for layer in self.layers:
            h = layer.forward(h, cache=cache)
        return h

    @replaceable("LayerStack.backward")
    def backward(self, dg: Any, need_dh: bool = True, need_params: bool = True) -> Any:
        """dg (N, D) -> dh (N, Q) (None without ``need_dh``) through the layers in reverse;
        parameter gradients accumulate in each layer unless ``need_params`` is False
        (samplers need only dh)."""
        for i in range(len(self.layers) - 1, -1, -1):
            dg = self.layers[i].backward(dg, need_dx=need_dh or i > 0, need_params=need_params)
        return dg

    def update_grids(self, h: Any, ratio: float) -> bool:
        """Grid updating (method §2.1) for generators without grids: nothing moves."""
        return False
