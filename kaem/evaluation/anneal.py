"""Annealed importance sampling (Neal 2001) along a path of tempered densities.

A path is a :class:`~kaem.samplers.target.Target` (a base log density ``log_prior`` and a
``log_lik``, each with its gradient) plus an exact sampler of the base. Between them lie

    p_t(v) ∝ exp(log_base(v) + t·log_lik(v)),     0 = t_0 < t_1 < … < t_K = 1,

and AIS carries a population from p_0 to p_1: v_0 ~ p_0, then for k = 1..K

    w += (t_k − t_{k−1}) · log_lik(v_{k−1}),    v_k = T_k(v_{k−1})  (k < K),

T_k a Markov kernel that leaves p_{t_k} invariant. exp(w) is an unbiased estimate of
Z_1/Z_0 (Z_0 = 1 for a normalised base), so log mean_c exp(w_c) is a stochastic lower bound
of log Z_1. A base sampler whose density q is not the base density itself adds the initial
log weight log p_0(v_0) − log q(v_0) (``log_w0``). Weights are accumulated in float64.

Population layout: C chains per datum on the leading axis, chain i = c·B + b for datum
b = i % B (what the path's likelihood reads), so ``w.reshape(C, B)`` has datum b in column b.

Kernels: ``n_steps`` Metropolis-adjusted Hamiltonian moves per temperature, each a fresh
momentum p ~ N(0, I), L leapfrog steps of size θ (the samplers' :func:`leapfrog`; L = 1 is
MALA), accepted with probability min(1, exp(−ΔH)) by a masked ``where``. Each such move
leaves p_{t_k} exactly invariant for any fixed θ.

Step sizes, and why the weights stay valid: θ is tuned per (temperature, datum) in a pilot
run on separate chains, log θ ← log θ + γ (acceptance − target) after every move (the mean
acceptance probability of the datum's pilot chains), and the adapted value at each
temperature is recorded; the estimating run then uses that table unchanged. Its kernels
are therefore functions of the pilot's random numbers alone, independent of the
estimating chains, so conditionally on the pilot every T_k is a fixed
p_{t_k}-invariant kernel and E[exp w] = Z_1/Z_0 holds exactly. (Adapting θ on the
estimating chains themselves would make T_k depend on their states and bias the weights.)
The same table serves the reverse run of bidirectional Monte Carlo: its kernels are the
forward run's, visited in the opposite order.

Device: the temperatures, their differences and the step table live on the device, the
loop over temperatures only queues work (accept/reject by ``where``, no data-dependent
shape), and nothing is read back until the caller reads the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from kaem.backend import array_module
from kaem.numerics import logsumexp
from kaem.samplers.automala import leapfrog
from kaem.samplers.target import Array, Evaluation, evaluate, expand

SCHEDULES = ("sigmoid", "geometric")
SIGMOID_DELTA = 4.0  # the sigmoidal schedule's steepness (Grosse et al. 2015 use 4)
GEOMETRIC_T_MIN = 1e-4  # the geometric schedule's first nonzero temperature
MALA_ACCEPTANCE = 0.574  # the optimal acceptance rate of MALA (L = 1)
HMC_ACCEPTANCE = 0.65  # and of HMC with L > 1 leapfrog steps
ADAPT_RATE = 0.5  # γ of the pilot's log θ update
PILOT_MOVES = 1  # the pilot's moves per temperature (at least n_steps)


class Path(Protocol):
    """What AIS needs from a path: a Target (``log_prior`` = base, ``log_lik``) with an exact
    base sampler. ``B`` data (chain i reads datum i % B), ``latent_shape`` of one state,
    ``init_step`` the pilot's first leapfrog step."""

    B: int
    latent_shape: tuple[int, ...]
    init_step: float

    def sample_base(self, n: int, rng: Any) -> tuple[Array, Array | None]:
        """n draws (n, *latent_shape) and their initial log weights (n,) (None: exact base)."""
        ...

    def log_prior(self, v: Array) -> tuple[Array, Array]:
        ...

    def log_lik(self, v: Array) -> tuple[Array, Array]:
        ...


class TargetPath:
    """Any :class:`~kaem.samplers.target.Target` as a path, with ``sample_base(n, rng) -> v``
    an exact sampler of its normalised ``log_prior`` (e.g. the linear-Gaussian test target)."""

    def __init__(self, target: Any, sample_base: Callable[[int, Any], Array], B: int,
                 latent_shape: Sequence[int], init_step: float = 0.5) -> None:
        self.target, self._sample, self.B = target, sample_base, int(B)
        self.latent_shape, self.init_step = tuple(latent_shape), float(init_step)

    def sample_base(self, n: int, rng: Any) -> tuple[Array, None]:
        return self._sample(n, rng), None

    def log_prior(self, v: Array) -> tuple[Array, Array]:
        return self.target.log_prior(v)

    def log_lik(self, v: Array) -> tuple[Array, Array]:
        return self.target.log_lik(v)


def schedule(K: int, kind: str = "sigmoid", delta: float = SIGMOID_DELTA,
             t_min: float = GEOMETRIC_T_MIN) -> np.ndarray:
    """K + 1 temperatures 0 = t_0 < … < t_K = 1 (host float64).

    * ``sigmoid``:   s_k = σ(δ(2k/K − 1)), t_k = (s_k − s_0)/(s_K − s_0): small steps at both
      ends, where log p_t changes fastest (Grosse et al. 2015);
    * ``geometric``: t_k = t_min^((K − k)/(K − 1)) for k ≥ 1 (t_0 = 0): equal ratios.
    K = 1 is plain importance sampling from the base, [0, 1].
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"number of temperatures K = {K!r}: must be an integer >= 1")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    k = np.arange(K + 1, dtype=np.float64)
    if K == 1:
        return np.array([0.0, 1.0])
    if kind == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-delta * (2.0 * k / K - 1.0)))
        t = (s - s[0]) / (s[-1] - s[0])
    else:
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"geometric schedule t_min = {t_min!r}: must lie in (0, 1)")
        t = np.concatenate([[0.0], t_min ** ((K - k[1:]) / (K - 1))])
    t[0], t[-1] = 0.0, 1.0
    return t


def target_acceptance(n_leapfrog: int) -> float:
    """The acceptance rate the pilot aims at: 0.574 for MALA (L = 1), 0.65 for HMC."""
    return MALA_ACCEPTANCE if n_leapfrog == 1 else HMC_ACCEPTANCE


def hmc_move(target: Any, v: Array, ev: Evaluation, t: Array, step: Array, n_leapfrog: int,
             rng: Any) -> tuple[Array, Evaluation, Array]:
    """One Metropolis-adjusted Hamiltonian move on log p_t = lp + t·ll for every chain.

    v (N, *latent), ev the target terms at v, t a 0-d device temperature, step θ (N,).
    ℓ = Σ_j ℓ_j over the L leapfrog steps telescopes to −ΔH; accept where log U < ℓ.
    Returns the new state, its evaluation and the acceptance probabilities min(1, e^ℓ) (N,).
    """
    xp = array_module(v)
    n = v.shape[0]
    p = rng.standard_normal(v.shape, dtype=v.dtype)
    logp, grad = ev.tempered(t)
    z, cur, ell = v, ev, xp.zeros(n, dtype=v.dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging trajectory is rejected below
        for _ in range(n_leapfrog):
            prop = leapfrog(target, z, logp, grad, t, p, step, 1.0)
            ell = ell + prop.ell  # −inf once any step was non-finite
            z, p, cur = prop.z, prop.p, prop.ev
            logp, grad = cur.tempered(t)
        accept = xp.log(rng.random(n, dtype=v.dtype)) < ell
        prob = xp.exp(xp.minimum(ell, 0.0))
    return xp.where(expand(accept, v), z, v), cur.where(accept, ev), prob


@dataclass
class AnnealResult:
    """What one annealing run leaves, all on the device.

    Attributes:
        w: log weights (N,) float64, chain i = c·B + b.
        v: final states (N, *latent); ev their evaluation.
        acceptance: mean acceptance probability per temperature index (K + 1,) (0 where no move ran).
        steps: the step table θ (K + 1, B) used (the pilot's record, or the one given).
    """

    w: Array
    v: Array
    ev: Evaluation
    acceptance: Array
    steps: Array


def anneal(path: Any, v: Array, temps: Array, C: int, rng: Any, steps: Array | None = None,
           n_steps: int = 1, n_leapfrog: int = 1, log_w0: Array | None = None) -> AnnealResult:
    """Run AIS from the states v (C·B, *latent) along ``temps`` (K + 1,), host or device (an
    increasing schedule, or a decreasing one for the reverse run).

    ``steps`` (K + 1, B): the fixed step table (row k used at temperature temps[k]); None runs
    a pilot: θ starts at ``path.init_step`` and adapts after every move (module docstring;
    max(n_steps, PILOT_MOVES) moves per temperature), and the table records the adapted θ
    at the end of each temperature. ``log_w0`` (C·B,): initial log weights (None: 0).
    """
    xp = array_module(v)
    temps = xp.asarray(temps, dtype=xp.float64)  # one copy before the loop (no-op on the device)
    B, K = path.B, temps.shape[0] - 1
    n = v.shape[0]
    if n != C * B:
        raise ValueError(f"{n} chains are not C·B = {C}·{B}")
    dt = xp.diff(temps)
    w = xp.zeros(n, dtype=xp.float64) if log_w0 is None else log_w0.astype(xp.float64)
    acc = xp.zeros(K + 1, dtype=xp.float64)
    ev = evaluate(path, v)
    pilot = steps is None
    goal = target_acceptance(n_leapfrog)
    if pilot:
        steps = xp.empty((K + 1, B), dtype=v.dtype)
        log_step = xp.full(B, math.log(path.init_step), dtype=v.dtype)
        steps[0] = path.init_step
    moves = max(n_steps, PILOT_MOVES) if pilot else n_steps
    for k in range(1, K + 1):
        w += dt[k - 1] * ev.ll.astype(xp.float64)
        if k == K:
            break
        t = temps[k]
        for _ in range(moves):
            theta = xp.exp(log_step) if pilot else steps[k]
            v, ev, prob = hmc_move(path, v, ev, t, xp.tile(theta, C), n_leapfrog, rng)
            acc[k] += prob.mean() / moves
            if pilot:
                log_step = log_step + ADAPT_RATE * (prob.reshape(C, B).mean(axis=0) - goal)
        if pilot:
            steps[k] = xp.exp(log_step)  # the adapted step: the pilot's best guess for t_k
    if pilot:
        steps[K] = steps[max(K - 1, 0)]
    return AnnealResult(w, v, ev, acc, steps)


def pilot_and_run(path: Any, temps: Array, C: int, rng: Any, pilot_chains: int, n_steps: int = 1,
                  n_leapfrog: int = 1) -> AnnealResult:
    """Forward AIS with C chains per datum after a pilot of ``pilot_chains`` per datum that
    tunes the step table (discarded but for that table)."""
    v, w0 = path.sample_base(pilot_chains * path.B, rng)
    temps = array_module(v).asarray(temps, dtype=array_module(v).float64)  # on the device once
    table = anneal(path, v, temps, pilot_chains, rng, None, n_steps, n_leapfrog, w0).steps
    v, w0 = path.sample_base(C * path.B, rng)
    return anneal(path, v, temps, C, rng, table, n_steps, n_leapfrog, w0)


def per_datum(w: Array, C: int, B: int) -> dict[str, Array]:
    """Per datum b, from the log weights w (C·B,) float64 (device arrays, (B,) each):

    * ``logp``: log mean_c exp(w_c);
    * ``ess``: (Σ_c e^{w_c})² / Σ_c e^{2 w_c}, in [1, C];
    * ``var``: the delta-method variance of ``logp``, Var_c(e^w)/(C·mean_c(e^w)²)
      = (C/ESS − 1)/(C − 1) (NaN for C = 1; unreliable when the ESS is small).
    """
    xp = array_module(w)
    w = w.reshape(C, B)
    lse = logsumexp(w, axis=0)
    e = xp.exp(w - lse[None])  # normalised weights, Σ_c = 1
    ess = 1.0 / (e * e).sum(axis=0)
    var = (C / ess - 1.0) / (C - 1) if C > 1 else xp.full(B, xp.nan)
    return {"logp": lse - math.log(C), "ess": ess, "var": var}
