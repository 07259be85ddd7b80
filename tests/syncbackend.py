"""A numpy backend that counts device->host synchronisations, for CPU-only tests.

On a GPU every conversion of a device array into a host value stalls the pipeline until the
queued work is done. This backend makes numpy behave like such a device: its arrays
(:class:`DArray`) are not ``numpy.ndarray`` instances, so nothing can turn them into host
values without going through a hook that counts:

* ``float()``, ``int()``, ``bool()``, ``complex()``, ``operator.index()``, ``.item()``,
  ``.tolist()``, ``.get()`` (cupy's explicit copy, used by ``kaem.backend.to_numpy``),
  ``numpy.asarray``/``numpy.array`` (``__array__``), printing;
* operations whose output shape depends on the data, which cupy can only size after a
  sync: ``nonzero``, ``flatnonzero``, ``argwhere``, one-argument ``where``, ``unique``,
  ``bincount``, ``compress``, ``extract``, boolean-mask indexing, and the host-bool
  comparisons ``allclose``, ``array_equal``, ``array_equiv``.

Everything else runs as numpy and stays wrapped: ufuncs and operators
(``__array_ufunc__``), numpy functions (``__array_function__``), methods, the
``xp`` module functions (:data:`XP`), and random generators (reductions return 0-d arrays and
``rng.integers(0, n)`` a 0-d array, as on cupy). ``kaem.backend.array_module`` finds
:data:`XP` through the array API's ``__array_namespace__``.

Usage::

    be = counting_backend("float64")
    with counting() as c:
        ...                       # library code on be
    assert c.n <= 4, c.events     # each event names the conversion and where it happened
"""
from __future__ import annotations

import contextlib
import traceback
from typing import Any, Iterator

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from kaem.backend import Backend


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.events: list[str] = []

    def hit(self, what: str) -> None:
        self.n += 1
        frame = next((f for f in reversed(traceback.extract_stack()[:-3]) if "syncbackend" not in f.filename),
                     None)
        self.events.append(f"{what} at {frame.filename.split('/')[-1]}:{frame.lineno}" if frame else what)


_COUNTER = [_Counter()]


def _sync(what: str) -> None:
    _COUNTER[0].hit(what)


@contextlib.contextmanager
def counting() -> Iterator[_Counter]:
    """Count the syncs made inside the block (the counter is returned)."""
    old, _COUNTER[0] = _COUNTER[0], _Counter()
    try:
        yield _COUNTER[0]
    finally:
        _COUNTER[0] = old


# ---- wrapping ------------------------------------------------------------------------------

def _wrap(x: Any) -> Any:
    if isinstance(x, (np.ndarray, np.generic)) and not isinstance(x, DArray):
        return DArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _unwrap(x: Any) -> Any:
    if isinstance(x, DArray):
        return x._a
    if isinstance(x, tuple):
        return tuple(_unwrap(v) for v in x)
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _has_bool_mask(key: Any) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (DArray, np.ndarray)) and np.asarray(_unwrap(k)).dtype == bool for k in keys)


SYNC_FUNCTIONS = {"nonzero", "flatnonzero", "argwhere", "unique", "bincount", "compress", "extract",
                  "allclose", "array_equal", "array_equiv"}


def _call(name: str, fn: Any, args: tuple, kwargs: dict) -> Any:
    if name in SYNC_FUNCTIONS or (name == "where" and len(args) + len(kwargs) == 1):
        _sync(name)
    out = kwargs.get("out")
    res = fn(*_unwrap(args), **_unwrap(kwargs))
    if out is not None:  # keep the caller's wrapper objects
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    return _wrap(res)


class DArray(NDArrayOperatorsMixin):
    """A "device" array: numpy inside, host conversions counted."""

    __slots__ = ("_a",)

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    # -- host conversions (counted)
    def __float__(self) -> float:
        _sync("float()")
        return float(self._a)

    def __int__(self) -> int:
        _sync("int()")
        return int(self._a)

    def __index__(self) -> int:
        _sync("index()")
        return self._a.__index__()

    def __bool__(self) -> bool:
        _sync("bool()")
        return bool(self._a)

    def __complex__(self) -> complex:
        _sync("complex()")
        return complex(self._a)

    def item(self, *args: Any) -> Any:
        _sync("item()")
        return self._a.item(*args)

    def tolist(self) -> Any:
        _sync("tolist()")
        return self._a.tolist()

    def get(self) -> np.ndarray:
        _sync("get()")
        return self._a.copy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        _sync("numpy.asarray()")
        return np.asarray(self._a, dtype=dtype)

    def __repr__(self) -> str:
        _sync("repr()")
        return f"DArray({self._a!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        _sync("format()")
        return format(self._a, spec)

    # -- the array namespace, as cupy arrays report cupy
    def __array_namespace__(self, api_version: Any = None) -> Any:
        return XP

    # -- numpy protocols: compute, stay on the "device"
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _call(ufunc.__name__, getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        return _call(func.__name__, func, args, kwargs)

    # -- attributes, methods, indexing
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no __array_interface__ / __array_struct__ / buffer back doors
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _call(name, attr, a, k)
        return _wrap(attr)

    def __getitem__(self, key: Any) -> Any:
        if _has_bool_mask(key):
            _sync("boolean-mask index")
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key)] = _unwrap(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[Any]:
        return (_wrap(v) for v in self._a)

    def __copy__(self) -> "DArray":
        return DArray(self._a.copy())

    def __deepcopy__(self, memo: Any) -> "DArray":
        return DArray(self._a.copy())


class _Generator:
    """np.random.Generator whose draws are device arrays (scalars too, as on cupy)."""

    def __init__(self, g: np.random.Generator) -> None:
        self._g = g

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._g, name)
        if callable(attr):
            return lambda *a, **k: _call(name, attr, a, k)
        return attr


class _Namespace:
    """A module whose functions take and return device arrays."""

    def __init__(self, mod: Any) -> None:
        self._mod = mod

    def __getattr__(self, name: str) -> Any:
        if name == "random":
            return _RANDOM
        attr = getattr(self._mod, name)
        if isinstance(attr, type(np)):  # submodule (linalg, fft, ...)
            return _Namespace(attr)
        if isinstance(attr, type) or not callable(attr):  # dtypes, constants
            return attr
        return lambda *a, **k: _call(name, attr, a, k)


class _Random:
    def default_rng(self, seed: Any = None) -> _Generator:
        return _Generator(np.random.default_rng(seed))


_RANDOM = _Random()
XP = _Namespace(np)


def counting_backend(dtype: str = "float64") -> Backend:
    """A Backend on the counting "device" (device name "gpu": code paths for devices)."""
    return Backend(XP, getattr(np, dtype), "sim")
