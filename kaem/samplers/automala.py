"""autoMALA (method §4.3): MALA with a per-chain step size chosen reversibly at every step.

Biron-Lattes, Surjanovic, Syed, Campbell, Bouchard-Côté, "autoMALA: Locally adaptive
Metropolis-adjusted Langevin algorithm", AISTATS 2024 (arXiv:2310.16782).

One iteration for every chain at once (chains on the leading axis, shapes (N, *latent)):

1. draw momentum p ~ N(0, I), bounds a, b ~ U(0,1) sorted (log a < log b), and a diagonal
   position scale s (the preconditioner, see ``mass``);
2. step search μ(z, p): ℓ(θ) = [log π(z') − ½|p'|²] − [log π(z) − ½|p|²] for one leapfrog
   step of size θ (one leapfrog step = one MALA step). With θ = θ₀·2^j:
   ℓ(θ₀) < log a (or not finite): halve until ℓ > log a, return that j < 0;
   ℓ(θ₀) > log b: double until ℓ < log b (or not finite), return the last j before that;
   otherwise j = 0.  Exactly ``max_rounds`` rounds of doubling/halving, all chains in
   lock step with masks (a chain that is done keeps its result; one that hits the cap
   returns its last probe: still a deterministic function of (z, p, a, b, θ₀, s), which
   is all the reversibility argument needs). The number of rounds is fixed so that no
   round has to ask the device whether any chain is still searching (a sync per round);
   with hundreds of chains some chain nearly always needs several rounds, so a fixed
   count of ``MAX_ROUNDS`` = 5 costs about what the data-dependent loop did. On the CPU
   (numpy) asking is free, so the rounds stop once every chain is done: a round without
   a searching chain changes nothing (the MNIST posterior's searches, once θ₀ is adapted,
   end after 3–4 rounds: a fifth to a third of the evaluations spared);
3. propose (z', p') = leapfrog(z, p, θ₀·2^j); run the search again from (z', −p') and
   accept with probability min(1, e^ℓ) only if it returns the same j (else reject).
   The map (z, p) → (z', −p') is then an involution on the accepted set, so the move
   keeps π (the tempered posterior of each chain) exactly invariant.

The first ``n_unadjusted`` iterations skip step 3 (always move: a burn-in of unadjusted
Langevin steps with a searched step size).

Parametrisation: ``step_size`` θ is the LEAPFROG step. In position space one step is
    z' = z + (θ²/2) s² ∇log π(z) + θ s ξ,
i.e. a Langevin step with η = θ²/2 (for s = 1) — keep this in mind when comparing with ULA.

Preconditioner (``mass``): the position scale s is fixed for a whole call, from the
spread of the population at the start of the call (σ̂ = per-coordinate std over chains, or
the ``std`` argument), so within a call every chain runs a π-invariant kernel (σ̂ depends
on the chain's own start only through an O(1/N) share of the population; pass ``std``
for a strictly fixed preconditioner):
  * "identity": s = 1;
  * "std":      s = σ̂;
  * "blend":    per chain and iteration, independently of the state: s = σ̂ w.p. 1/3,
    s = 1 w.p. 1/3, else s = λ + (1 − λ) σ̂ with λ ~ U(0,1) (the zero-one-inflated
    uniform mixture of Pigeons' MixDiagonalPreconditioner; a mixture of invariant kernels).
The step θ₀ is also fixed within a call; after the call it is adapted (method §4.3): the
mean accepted step of each chain is multiplied by ``eta_changerate`` if the chain's
acceptance rate exceeded 0.574, divided by it otherwise, and clamped to ``bounds``.

Differences from the Julia reference (deliberate): the reference carries each chain's
accepted step into the next iteration's θ₀ and re-estimates the preconditioner from the
current population every iteration, both of which make the kernel depend on the chain's
past and break exact invariance; it also reuses the last probe (not the returned step's)
as the proposal after a doubling run, and runs the reverse search without flipping the
momentum. Here the search follows the paper / Pigeons.jl (raw ℓ against the band, not |ℓ|).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from kaem.backend import array_module
from kaem.samplers.target import Array, Evaluation, Target, evaluate, expand, per_chain

TARGET_ACCEPTANCE = 0.574
MASS_OPTIONS = ("identity", "std", "blend")
MAX_ROUNDS = 5  # doublings/halvings per step search: θ₀·2^±5 reachable in one step


class Proposal(NamedTuple):
    """One leapfrog step: new state, target terms there, new momentum, log ratio ℓ (N,)."""

    z: Array
    ev: Evaluation
    p: Array
    ell: Array

    def where(self, mask: Array, other: "Proposal") -> "Proposal":
        xp = array_module(self.ell)
        return Proposal(
            xp.where(expand(mask, self.z), self.z, other.z),
            self.ev.where(mask, other.ev),
            xp.where(expand(mask, self.p), self.p, other.p),
            xp.where(mask, self.ell, other.ell),
        )


@dataclass
class AutoMALAInfo:
    """Per-chain diagnostics of one autoMALA call (all arrays (N,)).

    Attributes:
        acceptance_rate: mean over adjusted steps of the acceptance probability
            min(1, e^ℓ)·1[reversible] (NaN if no adjusted step ran).
        mean_step: mean leapfrog step θ over accepted adjusted moves (the input step
            where none was accepted).
        step_size_out: adapted θ₀ for the next call (see module docstring).
        reversible_rate: fraction of adjusted steps that passed the reversibility check.
        forward_acceptance: mean of min(1, e^ℓ) of the forward proposal (before the check).
        n_evals: population-wide target evaluations spent.
    """

    acceptance_rate: Array
    mean_step: Array
    step_size_out: Array
    reversible_rate: Array
    forward_acceptance: Array
    n_evals: int


@dataclass
class _Stats:
    """Running sums over adjusted steps, per chain."""

    prob: Array
    fwd: Array
    rev: Array
    acc_step: Array
    n_acc: Array
    n_adjusted: int = 0
    n_evals: int = field(default=0)

    @classmethod
    def zeros(cls, n: int, like: Array) -> "_Stats":
        xp = array_module(like)
        return cls(*(xp.zeros(n, dtype=like.dtype) for _ in range(5)))


# --------------------------------------------------------------------------- helpers


def population_std(z: Array) -> Array:
    """Per-coordinate std over chains, shape (1, *latent); zero spread → 1."""
    xp = array_module(z)
    s = z.std(axis=0, keepdims=True)
    return xp.where(s > 0, s, xp.ones_like(s))


def draw_scale(mass: str, std: Array, n: int, rng: Any) -> Array:
    """The position scale s for one iteration, broadcastable to (N, *latent)."""
    xp = array_module(std)
    if mass == "identity":
        return xp.ones_like(std)
    if mass == "std":
        return std
    if mass != "blend":
        raise ValueError(f"unknown mass {mass!r}; valid: {', '.join(MASS_OPTIONS)}")
    u = rng.random((n, 2), dtype=std.dtype)  # a chain's draws in its row (kaem/streams.py)
    w = xp.where(u[:, 0] < 1.0 / 3.0, 0.0, xp.where(u[:, 0] < 2.0 / 3.0, 1.0, u[:, 1])).astype(std.dtype)
    w = w.reshape((n,) + (1,) * (std.ndim - 1))
    return w + (1.0 - w) * std


def _sumsq(a: Array) -> Array:
    """Σ over latent axes of a², (N,)."""
    return (a * a).reshape(a.shape[0], -1).sum(axis=1)


def leapfrog(
    target: Target, z: Array, logp: Array, grad: Array, t: Array, p: Array, theta: Array, s: Array
) -> Proposal:
    """One leapfrog step of size θ (N,) in the coordinates z/s, with unit mass.

        p½ = p + (θ/2) s∇log π(z),  z' = z + θ s p½,  p' = p½ + (θ/2) s∇log π(z')
        ℓ = log π(z') − log π(z) − ½(|p'|² − |p|²)     (non-finite ℓ → −∞)
    """
    xp = array_module(z)
    th = expand(theta, z)
    p_half = p + 0.5 * th * s * grad
    z_new = z + th * s * p_half
    ev = evaluate(target, z_new)
    logp_new, grad_new = ev.tempered(t)
    p_new = p_half + 0.5 * th * s * grad_new
    ell = logp_new - logp - 0.5 * (_sumsq(p_new) - _sumsq(p))
    ell = xp.where(xp.isfinite(ell), ell, -xp.inf)
    return Proposal(z_new, ev, p_new, ell)


def select_step(
    target: Target,
    z: Array,
    ev: Evaluation,
    t: Array,
    p: Array,
    log_a: Array,
    log_b: Array,
    theta0: Array,
    s: Array,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[Array, Proposal, int]:
    """The autoMALA step-size search μ(z, p, a, b, θ₀), vectorised over chains.

    Returns:
        j: (N,) exponents (float, integer valued) of the chosen step θ₀·2^j;
        the leapfrog proposal at that step;
        the number of population-wide target evaluations (1 + max_rounds).
    """
    xp = array_module(z)
    logp, grad = ev.tempered(t)

    def probe(k: Array) -> Proposal:
        return leapfrog(target, z, logp, grad, t, p, theta0 * xp.exp2(k), s)

    k = xp.zeros_like(theta0)
    best = probe(k)
    grow = best.ell > log_b
    shrink = best.ell < log_a  # includes ℓ = −∞ (non-finite)
    direction = xp.where(grow, 1.0, xp.where(shrink, -1.0, 0.0)).astype(theta0.dtype)
    j = xp.zeros_like(theta0)
    active = grow | shrink
    n_evals = 1
    cand = best
    for _ in range(max_rounds):  # fixed count: chains that are done are masked, not awaited
        if xp is np and not active.any():  # on the CPU asking costs nothing: stop when all are done
            break
        k = k + direction * active
        cand = probe(k)
        n_evals += 1
        grow_on = active & grow & (cand.ell >= log_b)   # still too easy: keep doubling
        grow_off = active & grow & ~(cand.ell >= log_b)  # fell below log b: keep j = k − 1
        shrink_off = active & shrink & (cand.ell > log_a)
        take = grow_on | shrink_off
        best = cand.where(take, best)
        j = xp.where(take, k, j)
        active = active & ~(grow_off | shrink_off)
    capped = active & shrink  # never got above log a: return the last probe
    best = cand.where(capped, best)
    j = xp.where(capped, k, j)
    return j, best, n_evals


def adapt_step_size(
    mean_step: Array,
    acceptance_rate: Array,
    fallback: Array,
    bounds: tuple[float, float] = (1e-4, 10.0),
    changerate: float = 2.0,
    target_rate: float = TARGET_ACCEPTANCE,
) -> Array:
    """θ₀ for the next call: mean step ×changerate if acceptance > target else ÷, clamped.

    NaN mean steps (no accepted move) fall back to ``fallback``; NaN acceptance (no
    adjusted step) leaves the step unchanged apart from clamping.
    """
    xp = array_module(mean_step)
    base = xp.where(xp.isfinite(mean_step), mean_step, fallback)
    factor = xp.where(acceptance_rate > target_rate, changerate, 1.0 / changerate)
    factor = xp.where(xp.isnan(acceptance_rate), 1.0, factor)
    return xp.clip(base * factor, bounds[0], bounds[1]).astype(mean_step.dtype)


# --------------------------------------------------------------------------- kernel


def automala_step(
    target: Target,
    z: Array,
    ev: Evaluation,
    t: Array,
    theta0: Array,
    s: Array,
    rng: Any,
    adjusted: bool = True,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[Array, Evaluation, dict]:
    """One autoMALA iteration for all chains; returns z, its evaluation, step statistics."""
    xp = array_module(z)
    n = z.shape[0]
    p = rng.standard_normal(z.shape, dtype=z.dtype)
    u = rng.random((n, 2), dtype=z.dtype)  # a chain's draws in its row (kaem/streams.py)
    log_a, log_b = xp.log(u.min(axis=1)), xp.log(u.max(axis=1))
    j, prop, n_evals = select_step(target, z, ev, t, p, log_a, log_b, theta0, s, max_rounds)
    fwd = xp.exp(xp.minimum(prop.ell, 0.0))
    if adjusted:
        j_rev, _, n_rev = select_step(
            target, prop.z, prop.ev, t, -prop.p, log_a, log_b, theta0, s, max_rounds
        )
        n_evals += n_rev
        reversible = j_rev == j
        prob = xp.where(reversible, fwd, 0.0)
        accept = rng.random(n, dtype=z.dtype) < prob
    else:
        reversible = xp.ones(n, dtype=bool)
        prob = fwd
        accept = xp.isfinite(prop.ell)
    z = xp.where(expand(accept, z), prop.z, z)
    ev = prop.ev.where(accept, ev)
    stats = dict(
        accept=accept, prob=prob, fwd=fwd, reversible=reversible,
        step=theta0 * xp.exp2(j), n_evals=n_evals,
    )
    return z, ev, stats


def automala_run(
    target: Target,
    z: Array,
    temps: Any,
    step_size: Any,
    n_steps: int,
    rng: Any,
    *,
    ev: Evaluation | None = None,
    n_unadjusted: int = 2,
    mass: str = "identity",
    std: Array | None = None,
    max_rounds: int = MAX_ROUNDS,
    stats: _Stats | None = None,
) -> tuple[Array, Evaluation, _Stats]:
    """autoMALA iterations without the end-of-call adaptation (building block for
    :func:`automala` and the thermodynamic sampler). Accumulates into ``stats``."""
    xp = array_module(z)
    n = z.shape[0]
    t = per_chain(temps, n, z)
    theta0 = per_chain(step_size, n, z)
    std = population_std(z) if std is None else xp.asarray(std, dtype=z.dtype)
    stats = _Stats.zeros(n, z) if stats is None else stats
    if ev is None:
        ev = evaluate(target, z)
        stats.n_evals += 1
    for i in range(n_steps):
        adjusted = i >= n_unadjusted
        s = draw_scale(mass, std, n, rng)
        z, ev, st = automala_step(target, z, ev, t, theta0, s, rng, adjusted, max_rounds)
        stats.n_evals += st["n_evals"]
        if adjusted:
            stats.n_adjusted += 1
            stats.prob += st["prob"]
            stats.fwd += st["fwd"]
            stats.rev += st["reversible"]
            stats.acc_step += xp.where(st["accept"], st["step"], 0.0)
            stats.n_acc += st["accept"]
    return z, ev, stats


def summarize(
    stats: _Stats,
    step_size: Array,
    bounds: tuple[float, float] = (1e-4, 10.0),
    eta_changerate: float = 2.0,
) -> AutoMALAInfo:
    """Turn running sums into :class:`AutoMALAInfo` and the adapted step sizes."""
    xp = array_module(stats.prob)
    m = stats.n_adjusted
    nan = xp.full_like(stats.prob, xp.nan)
    acc = stats.prob / m if m else nan
    mean_step = xp.where(stats.n_acc > 0, stats.acc_step / xp.maximum(stats.n_acc, 1), step_size)
    out = adapt_step_size(mean_step, acc, step_size, bounds, eta_changerate)
    return AutoMALAInfo(
        acceptance_rate=acc,
        mean_step=mean_step,
        step_size_out=out,
        reversible_rate=stats.rev / m if m else nan,
        forward_acceptance=stats.fwd / m if m else nan,
        n_evals=stats.n_evals,
    )


def automala(
    target: Target,
    z: Array,
    temps: Any,
    step_size: Any,
    n_steps: int,
    rng: Any,
    n_unadjusted: int = 2,
    bounds: tuple[float, float] = (1e-4, 10.0),
    eta_changerate: float = 2.0,
    mass: str = "identity",
    std: Array | None = None,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[Array, AutoMALAInfo]:
    """Run ``n_steps`` autoMALA iterations on the tempered target (see module docstring).

    Args:
        target: a :class:`~kaem.samplers.target.Target`.
        z: (N, *latent) initial states.
        temps: scalar or (N,) temperatures t of log p(z) + t·log p(x|z).
        step_size: initial leapfrog step θ₀, scalar or (N,).
        n_steps: iterations, the first ``n_unadjusted`` of them without MH correction.
        rng: numpy/cupy ``Generator``.
        bounds: clamp of the adapted step.
        eta_changerate: factor of the post-run step adaptation.
        mass: "identity" | "std" | "blend" preconditioner.
        std: population spread to use instead of the std of z (broadcastable to z).
        max_rounds: cap on doublings/halvings per search.

    Returns:
        z after the run, and :class:`AutoMALAInfo` (``step_size_out`` feeds the next call).
    """
    theta0 = per_chain(step_size, z.shape[0], z)
    z, _, stats = automala_run(
        target, z, temps, theta0, n_steps, rng,
        n_unadjusted=n_unadjusted, mass=mass, std=std, max_rounds=max_rounds,
    )
    return z, summarize(stats, theta0, bounds, eta_changerate)
