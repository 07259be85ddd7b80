"""The generator network G: the KAN "outer functions" (spec section 1).

    h_q = Σ_p z_{q,p}        (latent (N, Q, P) -> generator input (N, Q))
    g   = G(h)               (a stack of KAN layers, widths Q -> ... -> D)

The output activation and the noise injection belong to the likelihood
(``kaem/likelihood.py``), which receives the pre-activation g (N, D).
"""
from __future__ import annotations

from typing import Any, Sequence

from .backend import Backend
from .kan import KANLayer, KANSpec


def latent_to_input(z: Any) -> Any:
    """h_q = Σ_p z_{q,p}:  z (N, Q, P) -> h (N, Q). (The mixture prior's z is already (N, Q).)"""
    return z.sum(axis=2) if z.ndim == 3 else z


def input_grad_to_latent(dh: Any, P: int) -> Any:
    """Backward of the sum over p: ∂L/∂z_{q,p} = ∂L/∂h_q;  dh (N, Q) -> (N, Q, P)."""
    return dh[:, :, None].repeat(P, axis=2)


class KANGenerator:
    """A stack of ``KANLayer``s mapping h (N, widths[0]) to g (N, widths[-1])."""

    def __init__(self, be: Backend, widths: Sequence[int], spec: KANSpec, rng: Any) -> None:
        self.widths = tuple(int(w) for w in widths)
        self.layers = [KANLayer(be, i, o, spec, rng) for i, o in zip(self.widths[:-1], self.widths[1:])]

    def named_layers(self) -> list[tuple[str, KANLayer]]:
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

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
