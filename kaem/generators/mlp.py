"""The MLP generator: dense layers with an activation, the simplest baseline.

Selected by ``MLP.use_mlp_lkhood = true`` (the reference has no MLP generator, so this is a
new section, shaped like its [CNN]); the widths are ``GeneratorModel.widths`` (first = Q)
with the data dimension D appended, as for the KAN generator, and ``MLP.activation`` sits
between layers:

    a_0 = h,   a_l = act(a_{l−1} W_l + b_l)  (l < L),   g = a_{L−1} W_L + b_L

h (N, Q) -> g (N, D), the pre-activation output (the likelihood applies out_act).
"""
from __future__ import annotations

from typing import Any, Sequence

from kaem.nn.activations import get_activation
from kaem.backend import Backend
from kaem.nn.kan import glorot_normal
from kaem.generators.base import LayerStack


class DenseLayer:
    """y = act(x W + b); parameters w (in, out) Glorot-normal, b (out) zero. ``activation``
    None: no activation (the output layer)."""

    row_independent = True  # each sample's output depends on its own input alone

    def __init__(self, be: Backend, in_dim: int, out_dim: int, rng: Any, activation: str | None) -> None:
        self.params = {"w": glorot_normal(rng, (in_dim, out_dim), be.dtype), "b": be.zeros(out_dim)}
        self.grads = {k: be.xp.zeros_like(v) for k, v in self.params.items()}
        self.buffers: dict[str, Any] = {}
        self.act = get_activation(activation) if activation else None
        self._cache: tuple = ()

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def keep_rows(self, rows: Any) -> None:
        """Keep only the samples ``rows`` (indices) in the forward cache (see
        ``LayerStack.backward``)."""
        x, dact = self._cache
        self._cache = (x[rows], None if dact is None else dact[rows])

    def forward(self, x: Any, cache: bool = True) -> Any:
        """x (N, in) -> y (N, out)."""
        y = x @ self.params["w"] + self.params["b"]
        dact = None
        if self.act is not None:
            y, dact = self.act(y)
        if cache:
            self._cache = (x, dact)
        return y

    def backward(self, dy: Any, need_dx: bool = True, need_params: bool = True) -> Any:
        """dy (N, out) -> dx (N, in) (None without ``need_dx``): da = dy·act'(a),
        dW = xᵀ da, db = Σ_n da, dx = da Wᵀ."""
        x, dact = self._cache
        if dact is not None:
            dy = dy * dact
        if need_params:
            self.grads["w"] += x.T @ dy
            self.grads["b"] += dy.sum(axis=0)
        return dy @ self.params["w"].T if need_dx else None


class MLPGenerator(LayerStack):
    """Dense layers mapping h (N, widths[0]) to g (N, widths[-1]); names ``<layer>.w``, ``<layer>.b``."""

    def __init__(self, be: Backend, widths: Sequence[int], rng: Any, activation: str = "leakyrelu") -> None:
        self.widths = tuple(int(w) for w in widths)
        last = len(self.widths) - 2
        self.layers = [DenseLayer(be, i, o, rng, activation if l < last else None)
                       for l, (i, o) in enumerate(zip(self.widths[:-1], self.widths[1:]))]
