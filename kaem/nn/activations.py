"""Elementwise activations as (value, derivative) pairs.

Each entry maps ``x`` (any shape) to ``(b(x), b'(x))``; the KAN base branch and the output
activation use them. ``swish`` is the reference's name for hardswish.

``identity`` is b(x) = x. ``none`` is the identity too wherever an activation is applied,
but as a KAN ``base_activation`` it means what it means in the reference: the layer has no
base branch w_base·b(x) at all (``kaem/kan.py``); use ``identity`` for a linear base branch.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kaem.backend import array_module

_GELU_C = 0.7978845608028654  # sqrt(2/pi), tanh approximation as in Flux.gelu
_SELU_A = 1.6732632423543772
_SELU_L = 1.0507009873554805
_LEAK = 0.01


def sigmoid(x: Any, out: Any = None) -> Any:
    """The logistic 1/(1+e^{-x}), into ``out`` if given (may be x itself).

    Stable as written: for x ≪ 0, e^{-x} overflows to inf and 1/(1+inf) = 0 exactly (the
    overflow is expected, not warned about); for x ≫ 0, 1/(1+tiny) = 1. Four passes."""
    xp = array_module(x)
    e = xp.negative(x, out=out)
    with np.errstate(over="ignore"):
        xp.exp(e, out=e)
    e += 1
    return xp.reciprocal(e, out=e)


def _silu(x):
    s = sigmoid(x)
    d = 1 - s  # s·(1 + x(1 − s)), in place
    d *= x
    d += 1
    d *= s
    return x * s, d


def _gelu(x):
    xp = array_module(x)
    u = _GELU_C * (x + 0.044715 * x ** 3)
    th = xp.tanh(u)
    du = _GELU_C * (1 + 3 * 0.044715 * x * x)
    return 0.5 * x * (1 + th), 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * du


def _relu(x):
    xp = array_module(x)
    return xp.maximum(x, 0), (x > 0).astype(x.dtype)


def _leakyrelu(x):
    xp = array_module(x)
    d = xp.where(x > 0, x.dtype.type(1), x.dtype.type(_LEAK))  # one pass, already in x's dtype
    return x * d, d


def _tanh(x):
    xp = array_module(x)
    t = xp.tanh(x)
    return t, 1 - t * t


def _sigmoid(x):
    s = sigmoid(x)
    return s, s * (1 - s)


def _elu(x, alpha=1.0):
    xp = array_module(x)
    em1 = xp.expm1(xp.minimum(x, 0))
    return xp.where(x > 0, x, alpha * em1), xp.where(x > 0, 1.0, alpha * (em1 + 1)).astype(x.dtype)


def _selu(x):
    v, d = _elu(x, _SELU_A)
    return _SELU_L * v, _SELU_L * d


def _celu(x, alpha=1.0):
    xp = array_module(x)
    e = xp.exp(xp.minimum(x, 0) / alpha)
    return xp.where(x > 0, x, alpha * (e - 1)), xp.where(x > 0, 1.0, e).astype(x.dtype)


def _hardswish(x):
    xp = array_module(x)
    r = xp.clip(x + 3, 0, 6)
    d = xp.where(x < -3, 0.0, xp.where(x > 3, 1.0, (2 * x + 3) / 6)).astype(x.dtype)
    return x * r / 6, d


def _identity(x):
    xp = array_module(x)
    return x, xp.ones_like(x)


ACTIVATIONS: dict[str, Callable[[Any], tuple[Any, Any]]] = {
    "silu": _silu, "gelu": _gelu, "relu": _relu, "leakyrelu": _leakyrelu, "tanh": _tanh,
    "sigmoid": _sigmoid, "elu": _elu, "selu": _selu, "celu": _celu, "hardswish": _hardswish,
    "swish": _hardswish, "identity": _identity, "none": _identity,
}


def get_activation(name: str) -> Callable[[Any], tuple[Any, Any]]:
    """The (value, derivative) function for ``name``; unknown names list the valid ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
