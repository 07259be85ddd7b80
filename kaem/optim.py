"""Adam, explicit and bias-corrected (spec section 4.5).

    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²,
    θ ← θ − lr · m̂ / (√v̂ + ε),   m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t).

Parameters and gradients are dicts name -> array (the model's flat views); θ, m and v are
updated in place so the model's arrays are the optimiser's arrays.
"""
from __future__ import annotations

from typing import Any

from .backend import array_module


class Adam:
    def __init__(self, params: dict[str, Any], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.params, self.lr, self.beta1, self.beta2, self.eps = params, lr, beta1, beta2, eps
        self.t = 0
        self.m = {k: array_module(p).zeros_like(p) for k, p in params.items()}
        self.v = {k: array_module(p).zeros_like(p) for k, p in params.items()}

    def step(self, grads: dict[str, Any]) -> None:
        """One update of every parameter from ``grads`` (same keys)."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, p in self.params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / c1) / (array_module(p).sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict[str, Any]:
        """Arrays and scalars to store in a checkpoint."""
        out: dict[str, Any] = {"t": self.t}
        out.update({f"m/{k}": v for k, v in self.m.items()})
        out.update({f"v/{k}": v for k, v in self.v.items()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict`` output (arrays may be host arrays). A missing entry
        raises KeyError (its name), a wrong shape or value ValueError naming the entry."""
        t = state["t"]
        if getattr(t, "shape", ()) != () or int(t) < 0 or int(t) != t:
            raise ValueError(f"t: expected a step count (an integer >= 0), got {t!r}")
        for name, buf in (("m", self.m), ("v", self.v)):
            for k, mine in buf.items():
                theirs = state[f"{name}/{k}"]
                if tuple(getattr(theirs, "shape", ())) != tuple(mine.shape):
                    raise ValueError(f"{name}/{k}: shape {tuple(getattr(theirs, 'shape', ()))}, "
                                     f"expected {tuple(mine.shape)}")
                if name == "v" and (array_module(theirs).asarray(theirs) < 0).any():
                    raise ValueError(f"v/{k}: negative second moments")
        self.t = int(t)
        for k in self.params:
            self.m[k][...] = array_module(self.m[k]).asarray(state[f"m/{k}"])
            self.v[k][...] = array_module(self.v[k]).asarray(state[f"v/{k}"])
