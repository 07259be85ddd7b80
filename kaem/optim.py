"""Optimisers and the step learning-rate schedule (method §4.5; config [OPTIMIZER] and
[LR_SCHEDULE]).

Each optimiser is written out; ``OPTIMIZER.type`` picks one from ``OPTIMIZERS``. With
gradient g, learning rate η and step counter t = 1, 2, ... (per-element operations):

    sgd       θ ← θ − η g
    momentum  v ← ρ v + η g;                   θ ← θ − v
    nesterov  v ← ρ v + η g;                   θ ← θ − (ρ v + η g)      (v after its update)
    rmsprop   s ← ρ s + (1 − ρ) g²;            θ ← θ − η g / (√s + ε)
    adam      m ← β1 m + (1 − β1) g,  v ← β2 v + (1 − β2) g²,
              u = m̂ / (√v̂ + ε),  m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t);   θ ← θ − η u
    adamw     adam's u;                        θ ← θ − η (u + λ θ)

These are the rules of Optimisers.jl, which the reference calls (PritRaj1/KAEM
src/pipeline/optimizer.jl). What each [OPTIMIZER] key means for each type:

    learning_rate  η, every type (the schedule below scales it)
    betas          β1, β2: adam, adamw
    ε              ε: adam, adamw, rmsprop
    ρ              momentum coefficient: momentum, nesterov; decay of the mean square: rmsprop
    decay          weight decay λ: adamw only (non-zero with another type is a config error);
                   coupled to η as in Optimisers.jl ≥ 0.4 and PyTorch's AdamW

Keys a type does not use are ignored (the reference's files carry all of them). Two details
differ from the reference on purpose: its ``adam`` ignores ε (Optimisers.Adam(η, β) keeps
1e-8), here ε is used wherever the rule has one; and Nesterov's velocity is stored with the
opposite sign (Optimisers.jl keeps −v). As in Optimisers.jl, η sits inside the momentum
velocity, so a schedule step changes the size of new contributions only (PyTorch instead
rescales the whole buffer).

Step schedule ([LR_SCHEDULE]): η_e = learning_rate · γ^{#{m ∈ milestone_epochs : m ≤ e}}
during epoch e = 0, 1, ... (0-based, counted from the start of training): the rate is
multiplied by γ = ``decay`` once at each listed epoch. The reference hands the milestones to
ParameterSchedulers.Step, which reads them as successive interval lengths and makes at most
len − 1 decays (3, 6, 9 -> decays after epochs 3 and 9 only); we follow the key's name.

Parameters and gradients are dicts name -> array (the model's flat views); θ and the state
are updated in place, so the model's arrays are the optimiser's arrays. Each optimiser
keeps one scratch array per parameter so a step allocates nothing. Every entry is updated
on its own, so the CPU kernel (``kaem/kernels/optim_chunks.py``) runs a step in cache-sized
chunks spread over the threads.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from kaem.backend import array_module
from kaem.kernels import replaceable



class OptimizerStateError(ValueError):
    """A stored optimiser state that does not fit this optimiser: ``field`` (a key of
    ``state_dict``) and what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")
        self.field, self.problem = field, problem


class Optimizer:
    """Shared machinery: per-parameter state arrays ("slots"), the step counter t, the
    learning rate, scratch buffers, and the state dict stored in checkpoints.

    Subclasses set ``name`` (the ``OPTIMIZER.type`` value), ``slots`` and ``_update``.
    """

    name = ""
    slots: tuple[str, ...] = ()
    nonnegative: tuple[str, ...] = ()  # slots holding mean squares

    def __init__(self, params: dict[str, Any], lr: float) -> None:
        self.params, self.lr, self.t = params, float(lr), 0
        self.state = {s: {k: array_module(p).zeros_like(p) for k, p in params.items()} for s in self.slots}
        self._tmp = {k: array_module(p).empty_like(p) for k, p in params.items()}

    def step(self, grads: dict[str, Any]) -> None:
        """One update of every parameter from ``grads`` (same keys and shapes)."""
        self.t += 1
        self.apply(grads)

    @replaceable("Optimizer.apply")
    def apply(self, grads: dict[str, Any]) -> None:
        """The update rule on every parameter, at the current step count t."""
        for k, p in self.params.items():
            self._update(p, grads[k], self._tmp[k], {s: self.state[s][k] for s in self.slots})

    def _update(self, p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        """Update θ (``p``) in place from ``g``; ``tmp`` is scratch, ``st`` maps each slot to
        its state array; all four are the same chunk of one parameter."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores: ``type``, ``t``, ``lr`` (the rate of the last step) and
        one array per slot and parameter, named ``<slot>/<parameter>``."""
        out: dict[str, Any] = {"type": self.name, "t": self.t, "lr": self.lr}
        for s, arrays in self.state.items():
            out.update({f"{s}/{k}": a for k, a in arrays.items()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict`` output (arrays may be host arrays). Everything is checked
        before anything changes; a problem raises :class:`OptimizerStateError` naming the
        field. ``lr`` may be absent (version-1 checkpoints): the current rate is kept."""
        kind = str(state.get("type", ""))
        if kind != self.name:
            raise OptimizerStateError("type", f"is {kind!r} but the config's OPTIMIZER.type is {self.name!r}")
        t = _scalar(state, "t")
        if t is None or t != int(t) or t < 0:
            raise OptimizerStateError("t", f"must be a step count >= 0, got {state.get('t')!r}")
        lr = _scalar(state, "lr") if "lr" in state else self.lr
        if lr is None or not (math.isfinite(lr) and lr > 0):
            raise OptimizerStateError("lr", f"must be a finite rate > 0, got {state.get('lr')!r}")
        expected = {f"{s}/{k}" for s in self.slots for k in self.params}
        unknown = sorted(set(state) - expected - {"type", "t", "lr"})
        if unknown:
            raise OptimizerStateError(unknown[0], f"does not belong to a {self.name!r} optimiser of this model")
        for s in self.slots:
            for k, p in self.params.items():
                field = f"{s}/{k}"
                if field not in state:
                    raise OptimizerStateError(field, "is missing")
                a = np.asarray(state[field]) if not hasattr(state[field], "get") else state[field]
                if tuple(a.shape) != tuple(p.shape):
                    raise OptimizerStateError(field, f"has shape {tuple(a.shape)}, the parameter has {tuple(p.shape)}")
                if a.dtype.kind != "f" or not bool(array_module(a).isfinite(a).all()):
                    raise OptimizerStateError(field, "is not a finite float array")
                if s in self.nonnegative and bool((a < 0).any()):
                    raise OptimizerStateError(field, "holds negative values (a mean square cannot)")
        self.t, self.lr = int(t), float(lr)
        for s, arrays in self.state.items():
            for k, a in arrays.items():
                a[...] = array_module(a).asarray(state[f"{s}/{k}"])


def _scalar(state: dict[str, Any], key: str) -> float | None:
    """A real scalar field of a state dict as float, None if absent or not one."""
    try:
        a = np.asarray(state[key].get() if hasattr(state[key], "get") else state[key])
        return float(a) if a.shape == () and a.dtype.kind in "iuf" else None
    except (KeyError, TypeError, ValueError):
        return None


def _ema(avg: Any, x: Any, beta: float, tmp: Any) -> None:
    """avg ← β avg + (1 − β) x in place (tmp: scratch of avg's shape, overwritten)."""
    array_module(avg).multiply(x, 1 - beta, out=tmp)
    avg *= beta
    avg += tmp


class SGD(Optimizer):
    """Plain gradient descent: θ ← θ − η g."""

    name = "sgd"

    def _update(self, p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        array_module(p).multiply(g, self.lr, out=tmp)
        p -= tmp


class Momentum(Optimizer):
    """Heavy ball: v ← ρ v + η g, θ ← θ − v."""

    name, slots = "momentum", ("v",)

    def __init__(self, params: dict[str, Any], lr: float = 0.01, rho: float = 0.9) -> None:
        super().__init__(params, lr)
        self.rho = rho

    def _update(self, p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        v = st["v"]
        v *= self.rho
        array_module(p).multiply(g, self.lr, out=tmp)
        v += tmp
        p -= v


class Nesterov(Momentum):
    """Nesterov momentum: v ← ρ v + η g, θ ← θ − (ρ v + η g); equal to Optimisers.jl's
    θ ← θ − (ρ² v_old + (1 + ρ) η g) with its velocity −v."""

    name = "nesterov"

    def _update(self, p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        v = st["v"]
        array_module(p).multiply(g, self.lr, out=tmp)  # η g
        v *= self.rho
        v += tmp
        p -= tmp
        array_module(p).multiply(v, self.rho, out=tmp)
        p -= tmp


class RMSProp(Optimizer):
    """s ← ρ s + (1 − ρ) g², θ ← θ − η g / (√s + ε) (no bias correction, as Optimisers.jl)."""

    name, slots, nonnegative = "rmsprop", ("s",), ("s",)

    def __init__(self, params: dict[str, Any], lr: float = 0.001, rho: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(params, lr)
        self.rho, self.eps = rho, eps

    def _update(self, p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        xp, s = array_module(p), st["s"]
        xp.multiply(g, g, out=tmp)
        _ema(s, tmp, self.rho, tmp)
        xp.sqrt(s, out=tmp)
        tmp += self.eps
        xp.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp


class Adam(Optimizer):
    """Adam, bias-corrected: θ ← θ − η m̂ / (√v̂ + ε)."""

    name, slots, nonnegative = "adam", ("m", "v"), ("v",)

    def __init__(self, params: dict[str, Any], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _direction(self, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        """Update the moments with g and leave η u = η m̂ / (√v̂ + ε) in tmp, computed as
        η √(1−β2^t)/(1−β1^t) · m / (√v + ε √(1−β2^t)) (two passes fewer, equal up to rounding)."""
        xp, m, v = array_module(g), st["m"], st["v"]
        _ema(m, g, self.beta1, tmp)
        xp.multiply(g, g, out=tmp)
        _ema(v, tmp, self.beta2, tmp)
        c2 = math.sqrt(1 - self.beta2 ** self.t)
        xp.sqrt(v, out=tmp)
        tmp += self.eps * c2
        xp.divide(m, tmp, out=tmp)
        tmp *= self.lr * c2 / (1 - self.beta1 ** self.t)

    def _update(self, p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        self._direction(g, tmp, st)
        p -= tmp


class AdamW(Adam):
    """Adam with weight decay coupled to the rate: θ ← θ − η (u + λ θ)."""

    name = "adamw"

    def __init__(self, params: dict[str, Any], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, beta1, beta2, eps)
        self.weight_decay = weight_decay

    def _update(self, p: Any, g: Any, tmp: Any, st: dict[str, Any]) -> None:
        self._direction(g, tmp, st)
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay  # θ − ηλθ, then − ηu: the same update
        p -= tmp


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (Adam, AdamW, SGD, Momentum, Nesterov, RMSProp)
}


class StepSchedule:
    """η_e = η0 · γ^{#{m ∈ milestones : m ≤ e}} for epoch e (0-based): a pure function of
    the epoch, so a resumed run recomputes it from the stored iteration."""

    def __init__(self, lr: float, gamma: float, milestones: Sequence[int]) -> None:
        self.lr0, self.gamma, self.milestones = float(lr), float(gamma), tuple(int(m) for m in milestones)

    def lr_at(self, epoch: int) -> float:
        """The learning rate during (0-based) epoch ``epoch``."""
        return self.lr0 * self.gamma ** sum(m <= epoch for m in self.milestones)
