"""Base densities π0 of the energy-based priors (spec section 1.1).

Each entry gives the density and its derivative (elementwise, any shape), the integration
domain [a, b] the reference uses (None: the KAN ``grid_range``) and the support of π0.
Quadrature and inverse transform sampling run on domain ∩ support: across the jumps of
the uniform density Gauss–Legendre loses its accuracy (Z off by 1% at 100 nodes) and
inverse transform would put mass outside [0, 1].
"""
from __future__ import annotations

import math
from typing import Any

_SQRT_2PI = math.sqrt(2 * math.pi)


def _pdf_ebm(xp, z):
    return xp.ones_like(z), xp.zeros_like(z)


def _pdf_uniform(xp, z):
    return ((z >= 0) & (z <= 1)).astype(z.dtype), xp.zeros_like(z)


def _pdf_gaussian(xp, z):
    p = xp.exp(-0.5 * z * z) / _SQRT_2PI
    return p, -z * p


def _pdf_lognormal(xp, z):
    pos = z > 0
    zs = xp.where(pos, z, 1)  # keeps log finite where the density is 0
    lz = xp.log(zs)
    p = xp.where(pos, xp.exp(-0.5 * lz * lz) / (zs * _SQRT_2PI), 0)
    return p, xp.where(pos, -p * (lz + 1) / zs, 0)


# name -> (density and its derivative, domain [a, b] (None = grid_range), support)
PI0: dict[str, tuple[Any, tuple[float, float] | None, tuple[float, float]]] = {
    "ebm": (_pdf_ebm, None, (-math.inf, math.inf)),
    "uniform": (_pdf_uniform, (-0.1, 1.1), (0.0, 1.0)),
    "gaussian": (_pdf_gaussian, (-1.2, 1.2), (-math.inf, math.inf)),
    "lognormal": (_pdf_lognormal, (0.0, 4.0), (0.0, math.inf)),
}
