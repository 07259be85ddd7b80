"""The Markov kernels of annealing (:mod:`kaem.evaluation.anneal`), each exactly invariant
for one tempered density p_t(v) ∝ exp(log_base(v) + t·log_lik(v)):

* :func:`hmc_move`: a Metropolis-adjusted Hamiltonian move, a fresh momentum p ~ N(0, I),
  L leapfrog steps of size θ (L = 1 is MALA) in the coordinates of a fixed preconditioner,
  accepted with probability min(1, exp(−ΔH)) by a masked ``where``; invariant for any fixed θ.
* :func:`refresh_moves`, where the base is N(0, I): one coordinate redrawn from the base and
  accepted with probability min(1, L(v')^t / L(v)^t). Gradient moves only drift within the
  mode a chain is in; a refresh move can jump to another, which is what a posterior of
  several modes needs (docs/benchmarks.md: the BDMC gaps with and without them).

Population layout as in :mod:`kaem.evaluation.anneal`: chain i = c·B + b reads datum b.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.samplers.target import Array, Evaluation, evaluate, expand

MALA_ACCEPTANCE = 0.574  # the optimal acceptance rate of MALA (L = 1)
HMC_ACCEPTANCE = 0.65  # and of HMC with L > 1 leapfrog steps


def target_acceptance(n_leapfrog: int) -> float:
    """The acceptance rate the pilot aims at: 0.574 for MALA (L = 1), 0.65 for HMC."""
    return MALA_ACCEPTANCE if n_leapfrog == 1 else HMC_ACCEPTANCE


def datum_view(a: Array, C: int, B: int) -> Array:
    """(C·B, *latent) -> (C, B, d): chain c·B + b at [c, b]."""
    return a.reshape(C, B, -1)


def precondition(scale: Array | None, a: Array, C: int, B: int, transpose: bool = False) -> Array:
    """A·a (or Aᵀ·a) per chain, A the factor of chain i's datum i % B: ``scale`` (B, d, d)
    lower-triangular or (B, d) diagonal, None for A = I; a (C·B, *latent) -> like a."""
    if scale is None:
        return a
    xp = array_module(a)
    f = datum_view(a, C, B)
    if scale.ndim == 2:
        out = f * scale[None].astype(a.dtype)
    else:
        out = xp.einsum("bji,cbj->cbi" if transpose else "bij,cbj->cbi", scale.astype(a.dtype), f)
    return out.reshape(a.shape)


def hmc_move(target: Any, v: Array, ev: Evaluation, t: Array, step: Array, n_leapfrog: int,
             rng: Any, scale: Array | None = None, C: int = 1, spread: float = 0.0) -> tuple[Array, Evaluation, Array]:
    """One Metropolis-adjusted Hamiltonian move on log p_t = lp + t·ll for every chain.

    v (N, *latent) with N = C·B, ev the target terms at v, t a 0-d device temperature, step
    θ (N,), ``scale`` A (B, d, d) or (B, d) or None (:func:`precondition`). The move is plain
    HMC with unit mass in the coordinates u = A⁻¹v (mass matrix M = (AAᵀ)⁻¹ in v):

        p ~ N(0, I),  p½ = p + (θ/2)·Aᵀ∇log p_t(v),  v' = v + θ·A p½,  p' = p½ + (θ/2)·Aᵀ∇log p_t(v'),

    L times; ℓ = log p_t(v_L) − log p_t(v_0) − ½(|p_L|² − |p_0|²) = −ΔH (the linear map's
    Jacobian is constant and cancels), accepted where log U < ℓ (a non-finite ℓ is
    rejected). Returns the new state, its evaluation and min(1, e^ℓ) (N,).
    """
    xp = array_module(v)
    n = v.shape[0]
    B = n // C
    if spread > 0:
        step = step * xp.exp2(spread * (rng.random(n, dtype=v.dtype) - 0.5))
    th = expand(step, v)
    p = rng.standard_normal(v.shape, dtype=v.dtype)
    logp0, grad = ev.tempered(t)
    z, cur, p0 = v, ev, p
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging trajectory is rejected below
        for _ in range(n_leapfrog):
            p = p + 0.5 * th * precondition(scale, grad, C, B, transpose=True)
            z = z + th * precondition(scale, p, C, B)
            cur = evaluate(target, z)
            logp_new, grad = cur.tempered(t)
            p = p + 0.5 * th * precondition(scale, grad, C, B, transpose=True)
        ell = logp_new - logp0 - 0.5 * (_sumsq(p) - _sumsq(p0))
        ell = xp.where(xp.isfinite(ell), ell, -xp.inf)
        accept = xp.log(rng.random(n, dtype=v.dtype)) < ell
        prob = xp.exp(xp.minimum(ell, 0.0))
    return xp.where(expand(accept, v), z, v), cur.where(accept, ev), prob


def refresh_moves(target: Any, v: Array, ev: Evaluation, t: Array, rng: Any, n_moves: int) -> tuple[Array, Evaluation, Array]:
    """``n_moves`` Metropolis-within-Gibbs moves from a standard-normal base N(0, I): in each,
    every chain redraws one coordinate j (uniform over the d coordinates) from N(0, 1),

        v'_j ~ N(0, 1),  v'_i = v_i (i ≠ j),  accepted where log U < t·(ll(v') − ll(v)).

    The proposal is the base's own conditional, so the base terms cancel from the ratio and
    each move leaves p_t ∝ N(v; 0, I)·L(v)^t invariant. Unlike a gradient move it jumps: the
    new v_j ignores the old one, so a chain can cross to another mode of the posterior along
    one coordinate. The ratio needs log-likelihood values alone (one generator forward
    pass per move); the gradients are computed once, at the end. v (N, *latent); returns the
    new state, its evaluation and the mean acceptance probability over moves (N,)."""
    xp = array_module(v)
    n = v.shape[0]
    d = int(np.prod(v.shape[1:]))
    value = getattr(target, "log_lik_value", None)
    ll = ev.ll.astype(xp.float64)
    acc = xp.zeros(n, dtype=xp.float64)
    rows = xp.arange(n)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(n_moves):
            j = xp.floor(rng.random(n) * d).astype(xp.int64)
            prop = v.reshape(n, d).copy()
            prop[rows, j] = rng.standard_normal(n, dtype=v.dtype)
            prop = prop.reshape(v.shape)
            ll_new = (value(prop) if value is not None else target.log_lik(prop)[0]).astype(xp.float64)
            ell = t * (ll_new - ll)
            ell = xp.where(xp.isfinite(ell), ell, -xp.inf)
            accept = xp.log(rng.random(n)) < ell
            acc += xp.exp(xp.minimum(ell, 0.0)) / n_moves
            v = xp.where(expand(accept, v), prop, v)
            ll = xp.where(accept, ll_new, ll)
    return v, evaluate(target, v), acc


def _sumsq(a: Array) -> Array:
    return (a * a).reshape(a.shape[0], -1).sum(axis=1)
