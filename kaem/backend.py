"""Array backend: one code path for CPU (numpy) and GPU (cupy).

Every module receives a :class:`Backend` and takes its arrays from ``be.xp``. Nothing in
the library imports cupy directly; host<->device copies happen only in :func:`to_numpy`
and :meth:`Backend.asarray`, which callers use at the edges (data loading, logging,
checkpoints), never inside a training step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEVICES = ("cpu", "gpu", "auto")
DTYPES = ("float32", "float64")

GPU_HELP = (
    "install the GPU extra with `pip install -e '.[gpu]'` (cupy-cuda12x) on a machine "
    "with an NVIDIA GPU and CUDA 12 driver, or run with --device cpu"
)


class BackendError(RuntimeError):
    """The requested device or dtype cannot be used."""


@dataclass(frozen=True)
class Backend:
    """The array module and default float type used by a model.

    Attributes:
        xp: ``numpy`` or ``cupy``.
        dtype: the float dtype of parameters and activations.
        device: ``"cpu"`` or ``"gpu"``.
    """

    xp: Any
    dtype: Any
    device: str

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Copy host data onto this backend's device as ``dtype`` (default: float dtype)."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def rng(self, seed: int | None) -> Any:
        """A new explicitly-seeded random generator on this device."""
        return self.xp.random.default_rng(seed)

    def zeros(self, shape: Any, dtype: Any = None) -> Any:
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU); used by benchmarks."""
        if self.device == "gpu":
            self.xp.cuda.get_current_stream().synchronize()


def _cupy_or_none() -> Any:
    try:
        import cupy  # noqa: WPS433 (optional dependency)

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDA driver errors, ...
        return None


def get_backend(device: str = "cpu", dtype: str = "float32") -> Backend:
    """Resolve ``--device`` and ``--dtype`` into a :class:`Backend`.

    ``auto`` picks the GPU when cupy and a CUDA device are usable, else the CPU.
    ``gpu`` without them raises :class:`BackendError` with install instructions.
    """
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if device in ("gpu", "auto"):
        cp = _cupy_or_none()
        if cp is not None:
            return Backend(cp, getattr(cp, dtype), "gpu")
        if device == "gpu":
            raise BackendError(f"--device gpu: cupy or a CUDA device is not available; {GPU_HELP}")
    return Backend(np, getattr(np, dtype), "cpu")


def to_numpy(a: Any) -> np.ndarray:
    """Host copy of a numpy or cupy array (no copy for numpy)."""
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def array_module(a: Any) -> Any:
    """numpy or cupy, whichever owns ``a`` (another array type names its module through the
    array API's ``__array_namespace__``: the sync-counting test backend does)."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy

        return cupy
    if mod == "numpy" or not hasattr(a, "__array_namespace__"):
        return np
    return a.__array_namespace__()
