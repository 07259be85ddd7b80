"""What the priors with a vector latent share (mixture, deep): z ∈ R^Q is the generator's
input as it is, h = z."""
from __future__ import annotations

from typing import Any


class VectorLatent:
    """Latents z (N, Q), generator input h = z; the class sets ``Q``."""

    Q: int

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.Q,)

    @staticmethod
    def to_input(z: Any) -> Any:
        """Generator input h = z (N, Q)."""
        return z

    @staticmethod
    def input_grad(dh: Any) -> Any:
        """Backward of ``to_input``: the identity."""
        return dh
