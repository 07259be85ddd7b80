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

Kernels (:mod:`kaem.evaluation.moves`): ``n_steps`` Metropolis-adjusted Hamiltonian moves
per temperature, then ``refresh`` refresh moves where the base is N(0, I); each leaves
p_{t_k} exactly invariant for fixed settings.

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
from kaem.numerics import logsumexp, rowwise_searchsorted
from kaem.evaluation.moves import datum_view, hmc_move, refresh_moves, target_acceptance
from kaem.samplers.target import Array, Evaluation, evaluate

SCHEDULES = ("sigmoid", "geometric")
SIGMOID_DELTA = 4.0  # the sigmoidal schedule's steepness (Grosse et al. 2015 use 4)
GEOMETRIC_T_MIN = 1e-4  # the geometric schedule's first nonzero temperature
ADAPT_RATE = 0.5  # γ of the pilot's log θ update
PILOT_MOVES = 1  # the pilot's moves per temperature (at least n_steps)
MASSES = ("dense", "diagonal", "identity")  # the preconditioner's kinds
DEFAULT_MASS = "dense"
MASS_BLOCKS = 50  # preconditioner blocks along the schedule
DENSE_MAX = 128  # a dense factor up to this latent size, the diagonal beyond
MIN_WINDOW = 4.0  # the pilot spread's averaging window, in temperatures, at least
SHRINK = 0.01  # the covariance's shrinkage towards its diagonal
JITTER = 1e-8  # and a ridge relative to its mean variance


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
    an exact sampler of its normalised ``log_prior`` (e.g. the linear-Gaussian test target);
    ``normal_base`` says that this base is N(0, I)."""

    def __init__(self, target: Any, sample_base: Callable[[int, Any], Array], B: int,
                 latent_shape: Sequence[int], init_step: float = 0.5, normal_base: bool = False) -> None:
        self.target, self._sample, self.B = target, sample_base, int(B)
        self.latent_shape, self.init_step = tuple(latent_shape), float(init_step)
        self.normal_base = bool(normal_base)  # log_prior is N(0, I): refresh moves apply

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


@dataclass
class Kernels:
    """The fixed kernel settings of an annealing run (the pilot's record).

    Attributes:
        steps: θ (K + 1, B): row k is used at temperature index k.
        scale: the preconditioner factors, one per block of temperatures: (n_blocks, B, d, d)
            lower-triangular, (n_blocks, B, d) diagonal, or None (identity).
        block: host ints (K + 1,): the block of each temperature index.
    """

    steps: Array
    scale: Array | None
    block: np.ndarray

    def reversed(self) -> "Kernels":
        """The same kernels for the temperatures visited in the opposite order."""
        return Kernels(self.steps[::-1], self.scale, self.block[::-1].copy())


def blocks(K: int, n_blocks: int) -> np.ndarray:
    """Block index (K + 1,) of each temperature index: the move temperatures 1..K−1 in
    ``n_blocks`` (at most K − 1) runs of nearly equal length; index 0 and K share the end blocks."""
    nb = max(1, min(n_blocks, K - 1))
    k = np.arange(K + 1)
    return np.clip((k - 1) * nb // max(K - 1, 1), 0, nb - 1).astype(np.int64)


class _Spread:
    """Per-datum running mean and covariance of the pilot's states (float64), an exponential
    moving average over temperatures at rate ``rate``, started at the base's N(0, I); its
    factor :meth:`factor` is the Cholesky factor of the covariance (``dense``) or the
    square root of its diagonal."""

    def __init__(self, xp: Any, B: int, d: int, dense: bool, rate: float) -> None:
        self.xp, self.dense, self.rate = xp, dense, rate
        self.mean = xp.zeros((B, d), dtype=xp.float64)
        self.cov = xp.broadcast_to(xp.eye(d), (B, d, d)).copy() if dense else xp.ones((B, d), dtype=xp.float64)

    def update(self, v: Array, C: int) -> None:
        xp, a = self.xp, self.rate
        f = datum_view(v, C, self.mean.shape[0]).astype(xp.float64)
        self.mean = (1 - a) * self.mean + a * f.mean(axis=0)
        r = f - self.mean[None]
        if self.dense:
            self.cov = (1 - a) * self.cov + a * xp.einsum("cbi,cbj->bij", r, r) / C
        else:
            self.cov = (1 - a) * self.cov + a * (r * r).mean(axis=0)

    def factor(self) -> Array:
        xp = self.xp
        if not self.dense:
            return xp.sqrt(self.cov)
        d = self.cov.shape[-1]
        diag = xp.einsum("bii->bi", self.cov)
        # shrink towards the diagonal and add a relative jitter: positive definite always
        cov = (1 - SHRINK) * self.cov + xp.einsum("bi,ij->bij", SHRINK * diag + JITTER * diag.mean(axis=1, keepdims=True),
                                                  xp.eye(d))
        return xp.linalg.cholesky(cov)


def resample(w: Array, v: Array, ev: Evaluation, eve: Array, C: int, B: int, threshold: float,
             rng: Any) -> tuple[Array, Array, Evaluation, Array, Array]:
    """Systematic resampling of each datum's C chains where their ESS < threshold·C.

    Per datum b with normalised weights W_c = e^{w_c}/Σ e^{w}, chain c takes the state of
    ancestor a_c = min{j : Σ_{i≤j} W_i > (U_b + c)/C}, U_b ~ U(0, 1), and every weight becomes
    log mean_c e^{w_c}, so that log mean exp of the weights still is the estimate. Elsewhere
    nothing changes (a ``where`` per datum: no data-dependent shape). ``eve`` (C·B,) ints: each
    chain's original ancestor, carried along. Returns (w, v, ev, eve, did) with did (B,) bool.
    """
    xp = array_module(w)
    W = w.reshape(C, B)
    lse = logsumexp(W, axis=0)
    Wn = xp.exp(W - lse[None])
    did = 1.0 < threshold * C * (Wn * Wn).sum(axis=0)  # ESS = 1/ΣW² below threshold·C
    cum = xp.cumsum(Wn, axis=0)
    cum = cum / cum[-1:]
    u = (rng.random(B)[None, :] + xp.arange(C, dtype=xp.float64)[:, None]) / C
    a = xp.clip(rowwise_searchsorted(cum.T, u.T).T, 0, C - 1)
    a = xp.where(did[None], a, xp.arange(C)[:, None])
    idx = (a * B + xp.arange(B)[None]).reshape(-1)
    w = xp.where(did[None], (lse - math.log(C))[None], W).reshape(-1)
    return w, v[idx], Evaluation(*(f[idx] for f in ev)), eve[idx], did


@dataclass
class AnnealResult:
    """What one annealing run leaves, all on the device.

    Attributes:
        w: log weights (N,) float64, chain i = c·B + b.
        v: final states (N, *latent); ev their evaluation.
        acceptance: mean acceptance probability per temperature index (K + 1,) (0 where no move ran).
        kernels: the kernels used (the pilot's record, or the ones given).
        eve: (N,) ints, each chain's original ancestor c (resampling).
        n_resampled: (B,) the number of resampling events per datum.
        refresh_acceptance: like ``acceptance``, of the refresh moves.
    """

    w: Array
    v: Array
    ev: Evaluation
    acceptance: Array
    kernels: Kernels
    eve: Array
    n_resampled: Array
    refresh_acceptance: Array

    @property
    def steps(self) -> Array:
        return self.kernels.steps


def anneal(path: Any, v: Array, temps: Array, C: int, rng: Any, kernels: Kernels | None = None,
           n_steps: int = 1, n_leapfrog: int = 1, log_w0: Array | None = None,
           mass: str = DEFAULT_MASS, resample_ess: float = 0.0, step_spread: float = 0.0,
           refresh: int = 0) -> AnnealResult:
    """Run AIS from the states v (C·B, *latent) along ``temps`` (K + 1,), host or device (an
    increasing schedule, or a decreasing one for the reverse run).

    ``kernels``: the fixed kernels (step table and preconditioner); None runs a pilot (module
    docstring): θ starts at ``path.init_step`` and adapts after every move
    (max(n_steps, PILOT_MOVES) moves per temperature), the preconditioner of each block of
    temperatures is frozen at the block's start from the running spread of the pilot's
    states (``mass``: "dense", "diagonal" or "identity"), and the result records both.
    ``log_w0`` (C·B,): initial log weights (None: 0). ``refresh``: refresh moves
    (:func:`refresh_moves`) after the Hamiltonian moves of every temperature, for a path
    whose base is N(0, I) (``path.normal_base``).
    """
    xp = array_module(v)
    temps = xp.asarray(temps, dtype=xp.float64)  # one copy before the loop (no-op on the device)
    B, K = path.B, temps.shape[0] - 1
    n = v.shape[0]
    if n != C * B:
        raise ValueError(f"{n} chains are not C·B = {C}·{B}")
    if refresh and not getattr(path, "normal_base", False):
        raise ValueError(f"refresh = {refresh!r}: refresh moves need a standard-normal base, and "
                         f"{type(path).__name__} has none; valid: refresh = 0")
    if mass not in MASSES:
        raise ValueError(f"unknown mass matrix {mass!r}; valid: {', '.join(MASSES)}")
    dt = xp.diff(temps)
    w = xp.zeros(n, dtype=xp.float64) if log_w0 is None else log_w0.astype(xp.float64)
    acc = xp.zeros(K + 1, dtype=xp.float64)
    acc_refresh = xp.zeros(K + 1, dtype=xp.float64)
    ev = evaluate(path, v)
    pilot = kernels is None
    goal = target_acceptance(n_leapfrog)
    if pilot:
        d = int(np.prod(v.shape[1:]))
        block = blocks(K, MASS_BLOCKS)
        nb = int(block.max()) + 1
        dense = mass == "dense" and d <= DENSE_MAX
        spread = _Spread(xp, B, d, dense, 1.0 / max(MIN_WINDOW, (K - 1) / nb)) if mass != "identity" else None
        scale = None if spread is None else xp.empty((nb,) + spread.cov.shape, dtype=xp.float64)
        steps = xp.empty((K + 1, B), dtype=v.dtype)
        log_step = xp.full(B, math.log(path.init_step), dtype=v.dtype)
        steps[0] = path.init_step
        kernels = Kernels(steps, scale, block)
    moves = max(n_steps, PILOT_MOVES) if pilot else n_steps
    cur_block = -1
    eve = xp.repeat(xp.arange(C), B)
    n_res = xp.zeros(B, dtype=xp.int64)
    for k in range(1, K + 1):
        w = w + dt[k - 1] * ev.ll.astype(xp.float64)
        if k == K:
            break
        if resample_ess > 0:
            w, v, ev, eve, did = resample(w, v, ev, eve, C, B, resample_ess, rng)
            n_res = n_res + did
        t, b = temps[k], int(kernels.block[k])
        if pilot and spread is not None and b != cur_block:
            kernels.scale[b] = spread.factor()  # frozen for the block: the estimating run's too
            cur_block = b
        A = None if kernels.scale is None else kernels.scale[b]
        for _ in range(moves):
            theta = xp.exp(log_step) if pilot else kernels.steps[k]
            v, ev, prob = hmc_move(path, v, ev, t, xp.tile(theta, C), n_leapfrog, rng, A, C, step_spread)
            acc[k] += prob.mean() / moves
            if pilot:
                log_step = log_step + ADAPT_RATE * (prob.reshape(C, B).mean(axis=0) - goal)
                if spread is not None:
                    spread.update(v, C)
        if refresh:
            v, ev, prob = refresh_moves(path, v, ev, temps[k], rng, refresh)
            acc_refresh[k] = prob.mean()
        if pilot:
            kernels.steps[k] = xp.exp(log_step)  # the adapted step: the pilot's best guess for t_k
    if pilot:
        kernels.steps[K] = kernels.steps[max(K - 1, 0)]
    return AnnealResult(w, v, ev, acc, kernels, eve, n_res, acc_refresh)


def pilot_and_run(path: Any, temps: Array, C: int, rng: Any, pilot_chains: int, n_steps: int = 1,
                  n_leapfrog: int = 1, mass: str = DEFAULT_MASS, resample_ess: float = 0.0,
                  step_spread: float = 0.0, refresh: int = 0) -> AnnealResult:
    """Forward AIS with C chains per datum after a pilot of ``pilot_chains`` per datum that
    tunes the kernels (discarded but for them)."""
    v, w0 = path.sample_base(pilot_chains * path.B, rng)
    temps = array_module(v).asarray(temps, dtype=array_module(v).float64)  # on the device once
    kern = anneal(path, v, temps, pilot_chains, rng, None, n_steps, n_leapfrog, w0, mass, resample_ess, step_spread,
                  refresh).kernels
    v, w0 = path.sample_base(C * path.B, rng)
    return anneal(path, v, temps, C, rng, kern, n_steps, n_leapfrog, w0, resample_ess=resample_ess, step_spread=step_spread,
                  refresh=refresh)


def per_datum(w: Array, C: int, B: int, eve: Array | None = None, n_resampled: Array | None = None) -> dict[str, Array]:
    """Per datum b, from the log weights w (C·B,) float64 (device arrays, (B,) each):

    * ``logp``: log mean_c exp(w_c);
    * ``ess``: (Σ_c e^{w_c})² / Σ_c e^{2 w_c}, in [1, C] (since the last resampling);
    * ``var``: the variance of ``logp`` estimated from the same run (delta method: the
      relative variance of mean_c e^{w_c}). Without resampling it is
      Var_c(e^w)/(C·mean_c(e^w)²) = (C/ESS − 1)/(C − 1); with m resampling events and each
      chain's original ancestor ("Eve") E_c, the genealogy estimator of Lee & Whiteley (2018),
      1 − (C/(C − 1))^{m+1} (1 − Σ_e (Σ_{c: E_c = e} W_c)²), W the normalised weights, which
      reduces to the former for m = 0 (every chain its own Eve). NaN for C = 1; unreliable
      when the ESS (or the number of surviving Eves) is small.
    """
    xp = array_module(w)
    w = w.reshape(C, B)
    lse = logsumexp(w, axis=0)
    e = xp.exp(w - lse[None])  # normalised weights, Σ_c = 1
    ess = 1.0 / (e * e).sum(axis=0)
    if C == 1:
        var = xp.full(B, xp.nan)
    elif eve is None:
        var = (C / ess - 1.0) / (C - 1)
    else:
        same = eve.reshape(C, B)[:, None, :] == xp.arange(C)[None, :, None]  # (chain, eve, datum)
        by_eve = (e[:, None, :] * same).sum(axis=0)  # (eve, datum)
        m = n_resampled if n_resampled is not None else 0
        var = 1.0 - (C / (C - 1.0)) ** (m + 1) * (1.0 - (by_eve * by_eve).sum(axis=0))
    return {"logp": lse - math.log(C), "ess": ess, "var": var}
