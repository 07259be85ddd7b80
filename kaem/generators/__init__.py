"""Generators G: latent input h (N, Q) -> pre-activation output g (N, D), one module each.

=====  ======================================================  ===========  ==========================
name   what                                                    module       selected by
=====  ======================================================  ===========  ==========================
kan    a stack of KAN layers (the paper's outer functions)     ``kan.py``   default
cnn    transposed convolutions from a 1×1 latent to C×H×W      ``conv.py``  ``CNN.use_cnn_lkhood``
mlp    dense layers with an activation (baseline)              ``mlp.py``   ``MLP.use_mlp_lkhood``
=====  ======================================================  ===========  ==========================

Every generator offers: ``params`` / ``grads`` / ``buffers`` (flat name -> live array dicts)
and ``zero_grad()``; ``forward(h, cache=True)`` -> g; ``backward(dg, need_dh=True,
need_params=True)`` -> dh (parameter gradients accumulate unless ``need_params`` is False);
``update_grids(h, ratio)`` -> whether grid updating (spec 2.1) moved anything; and the
``training`` flag (True: batch statistics in batch norm; False, for sampling and
evaluation: running statistics). ``base.LayerStack`` implements what they share.
"""
from __future__ import annotations

from typing import Any, Callable

from kaem.backend import Backend
from kaem.generators.conv import ConvGenerator
from kaem.generators.kan import KANGenerator
from kaem.generators.mlp import MLPGenerator

# name -> constructor from (config, backend, rng, input width Q, data shape (C, H, W))
GENERATORS: dict[str, Callable[..., Any]] = {
    "kan": KANGenerator.from_config,
    "cnn": ConvGenerator.from_config,
    "mlp": MLPGenerator.from_config,
}


def generator_kind(cfg: Any) -> str:
    """The generator a config selects: "cnn" with CNN.use_cnn_lkhood, "mlp" with
    MLP.use_mlp_lkhood (the config rejects both), else "kan"."""
    if cfg["CNN"]["use_cnn_lkhood"]:
        return "cnn"
    if cfg["MLP"]["use_mlp_lkhood"]:
        return "mlp"
    return "kan"


def make_generator(cfg: Any, be: Backend, rng: Any, in_dim: int, data_shape: tuple[int, ...]) -> Any:
    """Build the generator the config selects (parameters drawn from ``rng``)."""
    return GENERATORS[generator_kind(cfg)](cfg, be, rng, in_dim, data_shape)


__all__ = ["GENERATORS", "ConvGenerator", "KANGenerator", "MLPGenerator", "generator_kind", "make_generator"]
