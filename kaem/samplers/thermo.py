"""Thermodynamic integration (method §4.4): ladder, schedule, replica exchange, TI estimate.

Power posteriors p_t(z|x) ∝ p(x|z)^t p(z) on a ladder 0 = t_0 < ... < t_{N_t} = 1 and

    log p(x) = ∫_0^1 E_{p_t}[log p(x|z)] dt.

Population layout of :func:`thermo_sample`: K temperatures × B chains per temperature,
flattened as chain index i = k·B + b (temperature-major), i.e. ``z.reshape(K, B, ...)``.
Replica exchange swaps chain (k, b) with (k+1, b), so both must target the same datum:
with a target that maps chain i to datum i % B_data (as
:class:`~kaem.samplers.gaussian.LinearGaussianTarget` does) B must be a multiple of B_data.

Nothing here waits for the device: the random pair k stays a device integer, the swap is a
gather with a per-rung permutation built from masks, and the swap statistics are device
counters (read once, by whoever logs them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kaem.backend import array_module
from kaem.samplers.automala import _Stats, automala_run, population_std, summarize
from kaem.samplers.target import Array, Evaluation, Target, evaluate, per_chain
from kaem.samplers.ula import ula_run

TI_RULES = ("left", "trapezoid", "right")


def temperature_ladder(num_temps: int, p: float) -> list[float]:
    """t_k = (k/N_t)^p for k = 0..N_t, with N_t = ``num_temps``: N_t + 1 values, t_0 = 0.

    Returned as a Python list (host values; wrap with ``xp.asarray`` as needed).
    """
    if num_temps < 1:
        raise ValueError("num_temps must be >= 1")
    return [(k / num_temps) ** p for k in range(num_temps + 1)]


def p_schedule(i: int, n_updates: int, p_start: float, p_end: float, num_cycles: int) -> float:
    """Cosine schedule of the ladder exponent over training updates i = 0..n_updates:

        p(i) = p_start + (p_end − p_start)·½(1 − cos(2π(c + ½)·i / n_updates)),  c = num_cycles.

    p(0) = p_start and, for integer c, p(n_updates) = p_end (c + ½ half-periods).
    """
    if n_updates <= 0:
        raise ValueError("n_updates must be positive")
    phase = 2.0 * math.pi * (num_cycles + 0.5) * i / n_updates
    return p_start + (p_end - p_start) * 0.5 * (1.0 - math.cos(phase))


def exchange_log_ratio(ll: Array, temps: Any, k: Any) -> Array:
    """log acceptance of swapping rungs k, k+1: (t_{k+1} − t_k)(ll_k − ll_{k+1}), (B,);
    temps (K,) on the host or the device, k an int or a 0-d device integer."""
    xp = array_module(ll)
    t = xp.asarray(temps, dtype=ll.dtype)
    return (t[k + 1] - t[k]) * (ll[k] - ll[k + 1])


def replica_exchange(
    z: Array, ll: Array, temps: Any, rng: Any
) -> tuple[Array, Array, int, Array]:
    """One replica-exchange move between a random adjacent pair of temperatures.

    Picks k uniformly in {0..K−2}; for every datum b independently swaps z[k, b] and
    z[k+1, b] with probability min(1, exp((t_{k+1} − t_k)(ll[k, b] − ll[k+1, b]))),
    which keeps the product of the tempered posteriors invariant.

    Args:
        z: (K, B, *latent) states; ll: (K, B) log-likelihoods at them; temps: (K,).
        rng: numpy/cupy ``Generator``.

    Returns:
        new z and ll (copies), the pair index k (a 0-d integer array on the device of ll,
        so that nothing waits for it), accepted (B,) bool.
    """
    k, accepted = propose_exchange(ll, temps, rng)
    z, ll = z.copy(), ll.copy()
    swap_adjacent_(z, k, accepted)
    swap_adjacent_(ll, k, accepted)
    return z, ll, k, accepted


def propose_exchange(ll: Array, temps: Any, rng: Any) -> tuple[int, Array]:
    """The random part of :func:`replica_exchange`: pair k (0-d, on the device) and
    accepted (B,)."""
    xp = array_module(ll)
    n_temps, n_b = ll.shape
    if n_temps < 2:
        return xp.zeros((), dtype=xp.int64), xp.zeros(n_b, dtype=bool)
    k = xp.asarray(rng.integers(0, n_temps - 1))
    log_u = xp.log(rng.random(n_b, dtype=ll.dtype))
    return k, log_u < exchange_log_ratio(ll, temps, k)


def ti_weights(temps: Any, rule: str = "left") -> np.ndarray:
    """The TI rule: weights c_k (K,) with ∫_0^1 E_t[ll] dt ≈ Σ_k c_k E_{t_k}[ll] on the ladder
    temps (K,), t_0 = 0 < ... < t_{K−1} = 1; host float64. Each interval counted once
    (not the reference's doubled first interval, method §7.4):

        left:      c_k = t_{k+1} − t_k (k < K−1), c_{K−1} = 0   (t_0 samples are prior samples);
        trapezoid: c_k = ½(Δt_k + Δt_{k+1}), Δt_0 = Δt_K = 0;
        right:     c_0 = 0, c_k = t_k − t_{k−1}   (what the reference computes in effect; the
                   t = 1 rung gets the last interval, where the left sum gives it none).

    Since E_t[log p(x|z)] increases with t, left ≤ log p(x) ≤ right.
    """
    t = np.asarray([float(v) for v in temps], dtype=np.float64)
    dt = np.diff(t)
    c = np.zeros_like(t)
    if rule == "left":
        c[:-1] = dt
    elif rule == "trapezoid":
        c[:-1] += 0.5 * dt
        c[1:] += 0.5 * dt
    elif rule == "right":
        c[1:] = dt
    else:
        raise ValueError(f"unknown integration_rule {rule!r}; valid: {', '.join(TI_RULES)}")
    return c


def ti_log_evidence(ll: Array, temps: Any, rule: str = "left") -> Array:
    """Thermodynamic-integration estimate of log p(x_b) = Σ_k c_k ll[k, b] (:func:`ti_weights`);
    ll (K, B) estimates of E_{p_{t_k}}[log p(x_b|z)] (mean log-likelihood per temperature),
    temps (K,) -> (B,). Rungs with c_k = 0 are not read (they may hold NaN)."""
    xp = array_module(ll)
    c = ti_weights(temps, rule)
    used = np.flatnonzero(c)
    return xp.asarray(c[used], dtype=ll.dtype) @ ll[used]


def swap_adjacent_(a: Array, k: Any, accepted: Array) -> None:
    """Rows k and k+1 of a (K, B, ...) exchanged where accepted (B,), in place: only the two
    rungs are touched (k may be a 0-d device integer: index arrays, no sync)."""
    xp = array_module(a)
    lo, hi = a[k], a[k + 1]
    m = accepted.reshape(accepted.shape + (1,) * (lo.ndim - 1))
    new_lo, new_hi = xp.where(m, hi, lo), xp.where(m, lo, hi)  # both before either write
    a[k] = new_lo
    a[k + 1] = new_hi


def _swap_state_(z: Array, ev: Evaluation, n_temps: int, k: Any, acc: Array) -> tuple[Array, Evaluation]:
    """Apply accepted swaps of rungs k, k+1 to the flat population and its evaluation, in
    place (the arrays are the sampler's own; one that is not contiguous is copied first, so
    that the (K, B, ...) reshape is a view)."""
    xp = array_module(z)
    z = xp.ascontiguousarray(z)
    ev = Evaluation(*(None if a is None else xp.ascontiguousarray(a) for a in ev))  # ll alone at the end
    for a in (z, *ev):
        if a is not None:
            swap_adjacent_(a.reshape((n_temps, -1) + a.shape[1:]), k, acc)
    return z, ev


@dataclass(frozen=True)
class SplitLadder:
    """A ladder whose rungs are spread over the ranks of a parallel run: this rank holds the
    rungs [k0, k0 + n) of the whole ladder ``temps`` (K,), every datum of each; ``comm``
    reaches the ranks holding the neighbouring rungs (``kaem/parallel``)."""

    comm: Any
    temps: Any
    k0: int


def _exchange_across(z: Array, ev: Evaluation, n_local: int, ladder: SplitLadder, rng: Any,
                     data_rng: Any) -> tuple[Array, Evaluation, int, Any, Array]:
    """One replica-exchange move on a ladder spread over the ranks. Every rank draws the pair
    k (shared) and the data's uniforms; the rank of rung k decides with the rank of k+1:
    log-likelihoods first, then the states (each rung's chains, with their target terms),
    taken where the swap is accepted. Returns z, ev, whether this rank counts the attempt (it
    holds rung k), k and accepted (B,) (all False where this rank takes no part)."""
    xp = array_module(z)
    K = len(ladder.temps)
    k = int(rng.integers(0, K - 1))
    n_b = z.shape[0] // n_local
    log_u = xp.log(data_rng.random(n_b, dtype=z.dtype))
    lo, hi = k - ladder.k0, k + 1 - ladder.k0  # local rung indices of k and k+1
    have_lo, have_hi = 0 <= lo < n_local, 0 <= hi < n_local
    none = xp.zeros(n_b, dtype=bool)
    if not (have_lo or have_hi):
        return z, ev, False, k, none
    ll = ev.ll.reshape(n_local, n_b)
    dt = float(ladder.temps[k + 1]) - float(ladder.temps[k])
    if have_lo and have_hi:
        acc = log_u < dt * (ll[lo] - ll[hi])
        z, ev = _swap_state_(z, ev, n_local, xp.asarray(lo), acc)
        return z, ev, True, k, acc
    mine, peer = (lo, ladder.comm.rank + 1) if have_lo else (hi, ladder.comm.rank - 1)
    theirs = ladder.comm.sendrecv(ll[mine], peer)
    acc = log_u < dt * ((ll[mine] - theirs) if have_lo else (theirs - ll[mine]))
    z = xp.ascontiguousarray(z)
    ev = Evaluation(*(None if a is None else xp.ascontiguousarray(a) for a in ev))
    for a in (z, *ev):  # my rung's chains <- the neighbour's where the swap is accepted
        if a is not None:
            rung = a.reshape((n_local, n_b) + a.shape[1:])[mine]
            other = ladder.comm.sendrecv(rung, peer)
            rung[...] = xp.where(acc.reshape(acc.shape + (1,) * (rung.ndim - 1)), other, rung)
    return z, ev, have_lo, k, acc


def thermo_sample(
    target: Target,
    z: Array,
    temps: Any,
    n_steps_per_temp: int,
    step_size: Any,
    rng: Any,
    exchange_every: int = 10,
    sampler: str = "ula",
    exchange_rng: Any = None,
    ladder: SplitLadder | None = None,
    **automala_kw: Any,
) -> tuple[Array, Array, dict]:
    """Sample all power posteriors at once with ULA or autoMALA plus replica exchange.

    Args:
        target: a :class:`~kaem.samplers.target.Target`.
        z: (K·B, *latent) initial population, chain i = k·B + b runs at temps[k].
        temps: (K,) ladder.
        n_steps_per_temp: Langevin/autoMALA iterations (every chain makes all of them).
        step_size: ULA η or autoMALA leapfrog θ₀, scalar or (K·B,).
        rng: numpy/cupy ``Generator`` (or :class:`kaem.streams.RowDraws` over the chains).
        exchange_every: a replica-exchange move after every this many steps (0: never).
        exchange_rng: the exchanges' per-datum uniforms (a RowDraws over the data when the
            batch is split over processes); default ``rng``.
        ladder: when the ladder is split over ranks, this rank's place in it (``temps`` are
            then this rank's rungs, and exchanges cross to the neighbouring ranks).
        sampler: "ula" | "automala"; ``automala_kw`` go to autoMALA (n_unadjusted,
            mass, bounds, eta_changerate, max_rounds). The preconditioner spread is
            the per-temperature std of the initial population.

    Returns:
        z (K·B, *latent) final population; ll (K, B) log-likelihood at it; info dict with
        ``swap_rate`` (accepted / attempted swaps, 0-d), ``swaps_attempted`` (int),
        ``swaps_accepted`` (0-d), ``pair_counts`` (K−1,), and for autoMALA ``automala`` (an
        AutoMALAInfo). The statistics are device arrays: reading them is the caller's sync.
    """
    xp = array_module(z)
    t_k = xp.asarray(temps, dtype=z.dtype)
    n_temps = int(t_k.shape[0])
    n_chains = z.shape[0]
    if n_chains % n_temps:
        raise ValueError("z.shape[0] must be a multiple of len(temps)")
    n_b = n_chains // n_temps
    t = xp.repeat(t_k, n_b)
    ev = evaluate(target, z)
    z = z.copy()  # the population is updated and swapped in place from here on
    work: dict = {}  # ULA's scratch arrays, kept across the exchange blocks

    block = exchange_every if exchange_every > 0 else n_steps_per_temp
    if sampler == "automala":
        n_unadj = automala_kw.pop("n_unadjusted", 2)
        bounds = automala_kw.pop("bounds", (1e-4, 10.0))
        changerate = automala_kw.pop("eta_changerate", 2.0)
        theta0 = per_chain(step_size, n_chains, z)
        zk = z.reshape((n_temps, n_b) + z.shape[1:])
        std = xp.repeat(population_std(zk.swapaxes(0, 1))[0], n_b, axis=0)  # per rung
        stats = _Stats.zeros(n_chains, z)
        stats.n_evals = 1  # the evaluation above
    elif sampler != "ula":
        raise ValueError(f"unknown sampler {sampler!r}; valid: ula, automala")

    n_ladder = n_temps if ladder is None else len(ladder.temps)
    pair_counts = xp.zeros(max(n_ladder - 1, 1), dtype=xp.int64)
    attempted, accepted_total = 0, xp.zeros((), dtype=xp.int64)
    done = 0
    while done < n_steps_per_temp:
        m = min(block, n_steps_per_temp - done)
        if sampler == "ula":
            last = "ll" if done + m >= n_steps_per_temp else "full"  # the end needs ll alone
            z, ev = ula_run(target, z, t, step_size, m, rng, ev=ev, inplace=True, work=work, last=last)
        else:
            z, ev, stats = automala_run(
                target, z, t, theta0, m, rng, ev=ev, n_unadjusted=max(0, n_unadj - done),
                std=std, stats=stats, **automala_kw,
            )
        done += m
        if exchange_every > 0 and n_ladder > 1 and done % exchange_every == 0:
            if ladder is None:
                k, acc = propose_exchange(ev.ll.reshape(n_temps, n_b), t_k, exchange_rng or rng)
                z, ev = _swap_state_(z, ev, n_temps, k, acc)
                counted = True
            else:
                z, ev, counted, k, acc = _exchange_across(z, ev, n_temps, ladder, rng, exchange_rng or rng)
            if counted:  # the rank of the lower rung counts the attempt
                pair_counts += xp.arange(pair_counts.shape[0]) == k
                attempted += n_b
                accepted_total = accepted_total + acc.sum()

    info: dict = dict(
        swap_rate=accepted_total / attempted if attempted else xp.asarray(float("nan")),
        swaps_attempted=attempted,
        swaps_accepted=accepted_total,
        pair_counts=pair_counts,
    )
    if sampler == "automala":
        info["automala"] = summarize(stats, theta0, bounds, changerate)
    return z, ev.ll.reshape(n_temps, n_b), info
