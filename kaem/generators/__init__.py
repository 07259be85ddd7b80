"""Generators G: latent input h (N, Q) -> pre-activation output g (N, D), one module each.

=====  =================================================  ===========
name   what                                               module
=====  =================================================  ===========
kan    a stack of KAN layers (the paper's outer functions)  ``kan.py``
=====  =================================================  ===========

Every generator offers: ``params`` / ``grads`` / ``buffers`` (flat name -> live array dicts)
and ``zero_grad()``; ``forward(h, cache=True)`` -> g; ``backward(dg, need_dh=True,
need_params=True)`` -> dh (parameter gradients accumulate unless ``need_params`` is False);
``update_grids(h, ratio)`` -> whether grid updating (spec 2.1) moved anything.
"""
from __future__ import annotations

from typing import Any, Callable

from ..backend import Backend
from .kan import KANGenerator

# name -> constructor from (config, backend, rng, input width Q, data shape (C, H, W))
GENERATORS: dict[str, Callable[..., Any]] = {
    "kan": KANGenerator.from_config,
}


def generator_kind(cfg: Any) -> str:
    """The generator a config selects."""
    return "kan"


def make_generator(cfg: Any, be: Backend, rng: Any, in_dim: int, data_shape: tuple[int, ...]) -> Any:
    """Build the generator the config selects (parameters drawn from ``rng``)."""
    return GENERATORS[generator_kind(cfg)](cfg, be, rng, in_dim, data_shape)


__all__ = ["GENERATORS", "KANGenerator", "generator_kind", "make_generator"]
