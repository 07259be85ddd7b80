"""Base densities π0 of the energy-based priors (method §1.1).

Every π0 is given by its log density and the x-derivative of that, elementwise (any shape):
log π0 = −inf and derivative 0 outside the support. The density itself is exp(log π0);
the priors use log(π0(x) + ε) in their unnormalised log density and π0 exactly inside the
quadrature of Z. Each entry also names the integration domain [a, b] the reference uses
(None: the KAN ``grid_range``) and the support of π0. Quadrature and inverse transform
sampling run on domain ∩ support: across the jumps of the uniform density Gauss–Legendre
loses its accuracy (Z off by 1% at 100 nodes) and inverse transform would put mass
outside [0, 1].

``learnable_gaussian`` is N(μ_p, σ_p²) with μ_p and σ_p trained per p (one pair per input
p of the univariate prior, per component p of the mixture). σ_p is stored as its log,
``pi0_log_sigma``, so that no gradient step can make it negative:

    log π0(x) = −½ u² − log σ_p − ½ log 2π,   u = (x − μ_p)/σ_p,
    ∂/∂x = −u/σ_p,   ∂/∂μ_p = u/σ_p,   ∂/∂log σ_p = u² − 1.

(The reference's learnable density is the reciprocal of a Gaussian, method §7.8.)
"""
from __future__ import annotations

import math
from typing import Any

from kaem.backend import Backend, array_module

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_ALL = (-math.inf, math.inf)


def _log_ebm(xp, x):
    return xp.zeros_like(x), xp.zeros_like(x)


def _log_uniform(xp, x):
    inside = (x >= 0) & (x <= 1)
    return xp.where(inside, 0.0, -xp.inf).astype(x.dtype), xp.zeros_like(x)


def _log_gaussian(xp, x):
    return -0.5 * x * x - _LOG_SQRT_2PI, -x


def _log_lognormal(xp, x):
    pos = x > 0
    xs = xp.where(pos, x, 1)  # keeps log finite where the density is 0
    lx = xp.log(xs)
    return (xp.where(pos, -0.5 * lx * lx - lx - _LOG_SQRT_2PI, -xp.inf).astype(x.dtype),
            xp.where(pos, -(lx + 1) / xs, 0).astype(x.dtype))


# name -> (log density and its x-derivative, domain [a, b] (None = grid_range), support);
# None as the function: the density has trainable parameters (``BaseDensity`` computes it)
PI0: dict[str, tuple[Any, tuple[float, float] | None, tuple[float, float]]] = {
    "ebm": (_log_ebm, None, _ALL),
    "uniform": (_log_uniform, (-0.1, 1.1), (0.0, 1.0)),
    "gaussian": (_log_gaussian, (-1.2, 1.2), _ALL),
    "lognormal": (_log_lognormal, (0.0, 4.0), (0.0, math.inf)),
    "learnable_gaussian": (None, None, _ALL),
}


def sum_to_shape(a: Any, shape: tuple[int, ...]) -> Any:
    """Sum a broadcast array back to ``shape`` (the shape that was broadcast)."""
    lead = a.ndim - len(shape)
    a = a.sum(axis=tuple(range(lead))) if lead else a
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=axes, keepdims=True) if axes else a


class BaseDensity:
    """π0 of one prior. Trainable parameters (learnable_gaussian only) have ``shape``, which
    must broadcast against the arrays the prior evaluates π0 on: (P,) when p is the last
    axis (univariate prior), (P, 1) when it is the second to last (mixture components).

    Attributes: name, domain ((a, b) or None), support, params / grads (name -> array;
    empty for a fixed π0), flat (log π0 ≡ 0 everywhere: the ebm choice).
    """

    def __init__(self, name: str, be: Backend, shape: tuple[int, ...] = (1,)) -> None:
        if name not in PI0:
            raise ValueError(f"unknown π_0 {name!r}; valid: {', '.join(PI0)}")
        self.name = name
        self._fn, self.domain, self.support = PI0[name]
        self.flat = name == "ebm"  # log π0 ≡ 0: callers may skip its elementwise passes
        self.shape = tuple(shape)
        self.params: dict[str, Any] = {}
        if self._fn is None:
            self.params = {"pi0_mu": be.zeros(self.shape), "pi0_log_sigma": be.zeros(self.shape)}
        self.grads = {k: be.xp.zeros_like(v) for k, v in self.params.items()}

    def log_pdf(self, x: Any, param_derivs: bool = False) -> tuple:
        """log π0(x) and ∂/∂x (shape of x broadcast with the parameters); with
        ``param_derivs`` also {parameter name: ∂ log π0/∂θ} of that shape ({} if fixed)."""
        xp = array_module(x)
        if self._fn is not None:
            lp, dlp = self._fn(xp, x)
            return (lp, dlp, {}) if param_derivs else (lp, dlp)
        mu, log_sigma = self.params["pi0_mu"], self.params["pi0_log_sigma"]
        inv = xp.exp(-log_sigma)
        u = (x - mu) * inv
        lp = -0.5 * u * u - log_sigma - _LOG_SQRT_2PI
        if not param_derivs:
            return lp, -u * inv
        return lp, -u * inv, {"pi0_mu": u * inv, "pi0_log_sigma": u * u - 1}

    def accumulate(self, dlp: dict[str, Any], coeff: Any) -> None:
        """grads[θ] += Σ coeff · ∂ log π0/∂θ, reduced to each parameter's shape."""
        for k, d in dlp.items():
            self.grads[k] += sum_to_shape(coeff * d, self.shape)

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0
