"""Scopes in which the model's parameters are declared constant.

A training step, a sampler run and an evaluation read the same parameters many times; inside
``fixed_parameters()`` a kernel may build something from them once and reuse it (the KAN
layers' spline weights W = w_sp ⊙ c, ``kaem/kernels/kan_weights.py``). Outside a scope every
call recomputes, so any write is seen; on the reference path nothing is cached at all.

Why a scope and not a version counter: parameters are plain arrays written in place by the
optimiser, grid updating, checkpoint restore and by tests (finite differences poke single
entries), so no counter can see every write. Each scope gets a fresh id, so nothing survives
from one scope to the next; nothing in the library writes parameters inside a scope except
grid updating and ``KAEM.load_arrays``, which call :func:`parameters_changed`.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Iterator

_scope: list = [None]  # id of the open scope, None outside
_scope_ids = itertools.count(1)


def current_scope() -> int | None:
    """The id of the open scope (a new one after ``parameters_changed``), None outside."""
    return _scope[0]


@contextmanager
def fixed_parameters() -> Iterator[None]:
    """Declare every parameter and grid constant for the ``with`` block (also usable as a
    decorator). Nested scopes share the outer one."""
    if _scope[0] is not None:
        yield
        return
    _scope[0] = next(_scope_ids)
    try:
        yield
    finally:
        _scope[0] = None


def parameters_changed() -> None:
    """Parameters or grids were written: forget whatever was built in the open scope."""
    if _scope[0] is not None:
        _scope[0] = next(_scope_ids)
