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
``update_grids(h, ratio)`` -> whether grid updating (method §2.1) moved anything; and the
``training`` flag (True: batch statistics in batch norm; False, for sampling and
evaluation: running statistics). ``base.LayerStack`` implements what they share.
"""
from __future__ import annotations

from kaem.generators.conv import ConvGenerator
from kaem.generators.kan import KANGenerator
from kaem.generators.mlp import MLPGenerator

# name -> class; ``kaem/build.py`` chooses one and builds it from the config
GENERATORS: dict[str, type] = {"kan": KANGenerator, "cnn": ConvGenerator, "mlp": MLPGenerator}

__all__ = ["GENERATORS", "ConvGenerator", "KANGenerator", "MLPGenerator"]
