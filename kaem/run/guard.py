"""The training loop's NaN/inf guard.

Every iteration is checked twice, each with one device->host transfer of a few sums:
before the optimiser step the loss and the gradients, after it the parameters (an
overflowing update is caught at once, before grid updating or a checkpoint can use it).
The guard also keeps a copy of the parameters and buffers whose forward pass was last
seen finite (copied into reused arrays just before each update); that is what
``last_good.npz`` holds when a check fails.
"""
from __future__ import annotations

import math
from typing import Any

from kaem.backend import to_numpy
from kaem.model import KAEM


class FiniteGuard:
    """Finiteness checks and the last good parameters of ``model``."""

    def __init__(self, model: KAEM) -> None:
        self.model = model
        self.xp = model.be.xp
        self.iteration: int | None = None  # iteration of the kept copy; None: nothing kept yet
        self._params: dict[str, Any] = {}
        self._buffers: dict[str, Any] = {}

    def _sum(self, arrays: Any, dtype: Any) -> Any:
        return sum((a.sum(dtype=dtype) for a in arrays), self.xp.zeros((), dtype=dtype))

    def forward_problem(self, loss: Any) -> tuple[float, str | None]:
        """The loss as a float and what is non-finite ("loss", "gradient") or None.
        Σ over all gradients is non-finite iff one of them is (or they overflow)."""
        xp = self.xp
        total = self._sum(self.model.gradients().values(), loss.dtype)
        loss_f, total_f = to_numpy(xp.stack([xp.asarray(loss), total])).tolist()
        if not math.isfinite(loss_f):
            return loss_f, "loss"
        return loss_f, None if math.isfinite(total_f) else "gradient"

    def params_finite(self) -> bool:
        """Whether every parameter is finite (one transfer)."""
        params = self.model.parameters().values()
        dtype = next(iter(self.model.parameters().values())).dtype
        return math.isfinite(float(self._sum(params, dtype)))

    def keep(self, iteration: int) -> None:
        """Copy the current parameters and buffers (their forward pass was finite)."""
        for kept, live in ((self._params, self.model.parameters()), (self._buffers, self.model.buffers())):
            for k, a in live.items():
                dst = kept.get(k)
                if dst is None or dst.shape != a.shape or dst.dtype != a.dtype:
                    # a copy in a's memory layout (the KAN coefficients are stored transposed),
                    # so that each iteration's copyto is a straight copy, not a transpose
                    dst = kept[k] = self.xp.empty_like(a)
                self.xp.copyto(dst, a)
        self.iteration = iteration

    def kept(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(parameters, buffers) of the last :meth:`keep`."""
        return self._params, self._buffers
