"""Shared fixtures: float64 CPU backend and tiny KAEM configs for gradient checks."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `from gradcheck import ...`
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # `import cli`

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402


@pytest.fixture
def be64():
    return get_backend("cpu", "float64")


def tiny_config(*overrides: str, basis: str = "RBF", pi0: str = "gaussian", act: str = "silu"):
    """A small KAEM config (P=3, Q=4, generator 4->5->D, G=5) for exhaustive FD checks."""
    base = [
        "EbmModel.layer_widths=3,4", "GeneratorModel.widths=4,5",
        "EbmModel.grid_size=5", "GeneratorModel.grid_size=5",
        f"EbmModel.spline_function={basis}", f"GeneratorModel.spline_function={basis}",
        f"EbmModel.base_activation={act}", f"GeneratorModel.base_activation={act}",
        f"EbmModel.π_0={pi0}", "TRAINING.dtype=float64",
    ]
    return load_config("mnist", overrides=base + list(overrides))


def randomise(model, rng, scale: float = 0.3) -> None:
    """Move every parameter away from its initialisation (non-trivial FD checks)."""
    for p in model.parameters().values():
        p += scale * rng.standard_normal(p.shape)
