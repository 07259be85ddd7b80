"""Speed kernels: faster drop-ins for functions of the reference path, kept out of the maths.

Every equation lives in one reference function in the maths packages (``kaem/nn``,
``kaem/priors``, ``kaem/likelihood``, ...), written to be read. Some of those functions run
in the hot loop of training, and a faster arrangement of the same arithmetic (a fused loop
over knots that never forms the basis tensor, row blocks over the CPU threads, a cache of
weights built once per step, samples with no weight dropped) lives here, one module per
idea. A reference function that has such a kernel is decorated with ``@replaceable(name)``;
the kernel module registers its version under the same name with ``@register(name)``:

    # kaem/nn/kan.py (the reference)            # kaem/kernels/rbf.py (the kernel)
    @replaceable("KANLayer.weighted_pointwise")   @register("KANLayer.weighted_pointwise")
    def weighted_pointwise(self, z, d): ...       def weighted_pointwise(layer, z, d): ...

A kernel takes the reference's arguments and returns its result, or ``NotImplemented`` when
it does not apply (another basis, the GPU, ...), and then the reference runs. Each kernel has
an equality test against its reference (tests/test_kernels.py), and the environment variable
``KAEM_KERNELS`` chooses the path for a whole run:

    fast        (default) use the kernels
    reference   run every training, sampling and evaluation step on the reference path alone

Anything else is an error (:class:`KernelError`). ``using(mode)`` switches within a process
(tests, benches). Kernel modules are imported on the first dispatch, so importing a maths
module never imports a kernel.
"""
from __future__ import annotations

import functools
import importlib
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

MODES = ("fast", "reference")
ENV = "KAEM_KERNELS"
# the modules that register kernels, imported on the first dispatch
KERNEL_MODULES = ("kaem.kernels.rbf", "kaem.kernels.kan_weights", "kaem.kernels.pair_likelihood",
                  "kaem.kernels.live_rows", "kaem.kernels.its", "kaem.kernels.optim_chunks")

KERNELS: dict[str, Callable[..., Any]] = {}  # reference name -> kernel
REFERENCES: dict[str, Callable[..., Any]] = {}  # reference name -> reference function
_state: dict[str, Any] = {"override": None, "loaded": False}


class KernelError(ValueError):
    """``KAEM_KERNELS`` names no path."""


def kernel_mode() -> str:
    """The path in use: ``using``'s override, else ``KAEM_KERNELS`` (default "fast")."""
    mode = _state["override"] or os.environ.get(ENV, "fast") or "fast"
    if mode not in MODES:
        raise KernelError(f"{ENV}={mode!r} is not a kernel path; valid: {', '.join(MODES)}")
    return mode


@contextmanager
def using(mode: str) -> Iterator[None]:
    """Run the block on the given path ("fast" or "reference"), whatever the environment says."""
    if mode not in MODES:
        raise KernelError(f"unknown kernel path {mode!r}; valid: {', '.join(MODES)}")
    before = _state["override"]
    _state["override"] = mode
    try:
        yield
    finally:
        _state["override"] = before


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the kernel of the reference function ``name``."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        KERNELS[name] = fn
        return fn
    return wrap


def load() -> None:
    """Import every kernel module (each registers its kernels)."""
    if not _state["loaded"]:
        _state["loaded"] = True
        for module in KERNEL_MODULES:
            importlib.import_module(module)


def kernel(name: str) -> Callable[..., Any] | None:
    """The kernel registered for ``name`` on the fast path, else None."""
    if kernel_mode() != "fast":
        return None
    load()
    return KERNELS.get(name)


def replaceable(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a reference function as one a kernel may replace: on the fast path the call goes
    to the kernel registered under ``name`` (unless it returns ``NotImplemented``), else to
    the reference, which stays reachable as ``fn.reference``."""
    def wrap(ref: Callable[..., Any]) -> Callable[..., Any]:
        REFERENCES[name] = ref

        @functools.wraps(ref)
        def dispatch(*args: Any, **kwargs: Any) -> Any:
            fast = kernel(name)
            if fast is not None:
                out = fast(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            return ref(*args, **kwargs)

        dispatch.reference = ref  # type: ignore[attr-defined]
        dispatch.kernel_name = name  # type: ignore[attr-defined]
        return dispatch
    return wrap


__all__ = ["ENV", "KERNELS", "KernelError", "MODES", "REFERENCES", "kernel", "kernel_mode", "load", "register",
           "replaceable", "using"]
