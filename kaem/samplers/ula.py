"""Unadjusted Langevin algorithm (method §4.2), vectorised over chains.

    z ← z + η ∇_z log π_t(z) + √(2η) ξ,    ξ ~ N(0, I),   log π_t = log p(z) + t·log p(x|z)

No Metropolis correction: the chain is biased by O(η). For a Gaussian target with
precision Λ the stationary law is N(μ, Λ⁻¹ (I − ηΛ/2)⁻¹) (see
:meth:`kaem.samplers.gaussian.LinearGaussianTarget.ula_moments`).
"""
from __future__ import annotations

from typing import Any

from kaem.backend import array_module
from kaem.samplers.target import Array, Evaluation, Target, evaluate, evaluate_log_lik, expand, per_chain

LAST = ("full", "ll", "none")  # what ula_run evaluates at the final state


def ula_run(
    target: Target,
    z: Array,
    temps: Any,
    step_size: Any,
    n_steps: int,
    rng: Any,
    ev: Evaluation | None = None,
    *,
    inplace: bool = False,
    work: dict | None = None,
    last: str = "full",
) -> tuple[Array, Evaluation | None]:
    """ULA steps that also return the target terms at the final state.

    Args:
        target: a :class:`~kaem.samplers.target.Target`.
        z: (N, *latent) initial states.
        temps: scalar or (N,) temperatures.
        step_size: η, scalar or (N,).
        n_steps: number of Langevin steps.
        rng: numpy/cupy ``Generator``; the only source of randomness.
        ev: the target terms at z, if already known (saves one evaluation).
        inplace: update z itself (the caller owns it) instead of a copy.
        work: a dict the caller keeps across calls for the two scratch arrays of a step
            (a sampler that calls ``ula_run`` once per replica-exchange block).
        last: the evaluation at the final state: "full" (every term and gradient, for a
            run that continues), "ll" (the log-likelihood alone: the ladder's last
            exchange and its returned ll) or "none" (a caller that wants only z).

    Returns:
        z after n_steps, and the :class:`Evaluation` at it (n_steps (+1) evaluations; None
        with ``last="none"``, ll alone with ``last="ll"``).
    """
    if last not in LAST:
        raise ValueError(f"unknown last={last!r}; valid: {', '.join(LAST)}")
    xp = array_module(z)
    n = z.shape[0]
    t = expand(per_chain(temps, n, z), z)
    eta = expand(per_chain(step_size, n, z), z)
    noise_scale = xp.sqrt(2.0 * eta)
    ev = evaluate(target, z) if ev is None else ev
    if n_steps == 0:
        return z, ev
    if not inplace:
        z = z.copy()  # updated in place below: the caller's array stays as it was
    work = {} if work is None else work
    if work.get("step") is None or work["step"].shape != z.shape or work["step"].dtype != z.dtype:
        work["step"], work["xi"] = xp.empty_like(z), xp.empty_like(z)
    step, xi = work["step"], work["xi"]  # reused by every step
    for i in range(n_steps):
        # z += η (∇log p + t ∇log p(x|z)) + √(2η) ξ, in the order (and so the rounding) of
        # z + η·grad + √(2η)·ξ, with no temporaries
        xp.multiply(ev.gll, t, out=step)
        step += ev.glp
        step *= eta
        z += step
        rng.standard_normal(z.shape, dtype=z.dtype, out=xi)
        xi *= noise_scale
        z += xi
        if i < n_steps - 1 or last == "full":
            ev = evaluate(target, z)
        else:  # the final state's gradients are never read
            ev = evaluate_log_lik(target, z) if last == "ll" else None
    return z, ev


def ula(target: Target, z: Array, temps: Any, step_size: Any, n_steps: int, rng: Any) -> Array:
    """Run ``n_steps`` of ULA on the tempered target from z (N, *latent); returns z.

    ``temps`` and ``step_size`` are scalars or per-chain (N,) arrays.
    """
    return ula_run(target, z, temps, step_size, n_steps, rng, last="none")[0]
