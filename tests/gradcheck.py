"""Central-difference gradient checking for hand-written backward passes.

Import from a test module with::

    from gradcheck import numerical_grad, rel_error   # tests/ is on sys.path under pytest

API
---
numerical_grad(f, array, eps=1e-6) -> ndarray shaped like ``array``
    ``f()`` takes no arguments and returns a scalar loss that reads ``array`` (a parameter,
    an input, ...). Every entry of ``array`` is perturbed IN PLACE by ±eps, ``f`` is
    re-evaluated, and the entry is restored exactly, so ``array`` must be the very object
    the computation reads (not a copy). 0-d arrays (a scalar tau) are supported.
rel_error(a, b) -> float
    max|a − b| / max(max|a|, max|b|, tiny): one scale for the whole array, so tiny entries
    do not blow the ratio up.
check_grad(f, array, analytic, eps=1e-6, tol=1e-6) -> float
    ``numerical_grad`` + ``rel_error`` + a readable assertion; returns the error.
check_grads(f, arrays, analytic, ...)
    ``check_grad`` for every entry of a name -> array dict (e.g. all of a model's parameters).

In float64 with eps = 1e-6 central differences are accurate to ~1e-8..1e-10 relative on
smooth functions; keep the inputs of non-smooth functions (relu kinks, B-spline knots)
farther than eps from the non-smooth points (see ``away_from``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from kaem.backend import to_numpy


def numerical_grad(f: Callable[[], Any], array: Any, eps: float = 1e-6) -> np.ndarray:
    """∂f/∂array by central differences, perturbing ``array`` in place (restored after)."""
    grad = np.zeros(array.shape, dtype=np.float64)
    for idx in np.ndindex(*array.shape):
        old = float(array[idx])
        array[idx] = old + eps
        fp = float(to_numpy(f()))
        array[idx] = old - eps
        fm = float(to_numpy(f()))
        array[idx] = old
        grad[idx] = (fp - fm) / (2.0 * eps)
    return grad


def rel_error(a: Any, b: Any) -> float:
    """max|a-b| / max(max|a|, max|b|, tiny)."""
    a = np.asarray(to_numpy(a), dtype=np.float64)
    b = np.asarray(to_numpy(b), dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), np.finfo(np.float64).tiny)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def check_grad(f: Callable[[], Any], array: Any, analytic: Any, eps: float = 1e-6,
               tol: float = 1e-6, name: str = "") -> float:
    """Assert that ``analytic`` matches the central-difference gradient of ``f`` w.r.t.
    ``array`` to relative error ``tol``; return the error."""
    num = numerical_grad(f, array, eps)
    ana = np.asarray(to_numpy(analytic), dtype=np.float64)
    assert ana.shape == num.shape, f"{name}: analytic shape {ana.shape} != {num.shape}"
    err = rel_error(ana, num)
    assert err <= tol, (f"{name}: rel error {err:.3e} > {tol:.1e}\n"
                        f"analytic={ana.ravel()[:8]}\nnumeric ={num.ravel()[:8]}")
    return err


def check_grads(f: Callable[[], Any], arrays: dict, analytic: dict, eps: float = 1e-6,
                tol: float = 1e-6, name: str = "") -> None:
    """``check_grad`` for every name -> array of ``arrays`` against ``analytic[name]``."""
    for k, a in arrays.items():
        check_grad(f, a, analytic[k], eps=eps, tol=tol, name=f"{name} {k}")


def away_from(rng: np.random.Generator, shape: tuple, lo: float, hi: float,
              bad: Iterable[float], margin: float = 0.02) -> np.ndarray:
    """Uniform draws on [lo, hi] redrawn until every entry is ≥ ``margin`` from every
    point in ``bad`` (kinks, knots); keeps finite differences off non-smooth points."""
    bad = np.asarray(list(bad), dtype=np.float64)
    x = rng.uniform(lo, hi, size=shape)
    for _ in range(1000):
        near = (np.abs(x[..., None] - bad).min(axis=-1) < margin) if bad.size else np.zeros(x.shape, bool)
        if not near.any():
            return x
        x[near] = rng.uniform(lo, hi, size=int(near.sum()))
    raise RuntimeError("could not place points away from the excluded set")
