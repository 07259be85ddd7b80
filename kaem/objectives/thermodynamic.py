"""Thermodynamic integration (method §4.4): all power posteriors sampled at once, the loss
from the TI estimate of log p(x).

Selected by ``THERMODYNAMIC_INTEGRATION.num_temps`` = N_t > 1. Ladder t_k = (k/N_t)^p,
k = 0..N_t, p from :func:`kaem.samplers.p_schedule` over training. Rung 0 (t = 0, the prior)
is sampled exactly by inverse transform; rungs 1..N_t are one population of N_t·B chains
sampled together by :func:`kaem.samplers.thermo_sample` (``N_langevin_per_temp`` steps,
replica exchange every ``replica_exchange_frequency``). With z_{k,b} the chain of datum b
at t_k and c_k the weights of the TI rule (:func:`kaem.samplers.ti_weights`):

    L = − (1/B) Σ_b Σ_{k=0}^{N_t} c_k ll(x_b, z_{k,b})  −  (1/B) Σ_b log p̃(z_{N_t,b})  +  prior term

Prior term as in Langevin MLE (``kaem/objectives/langevin.py``), its contrastive draws the
rung-0 prior samples. Like the other objectives, ``thermo_loss_and_grad`` holds the chains
constant (finite-difference checked) and ``thermo_step`` samples with the config.

Over several processes (``kaem/parallel``) a rank holds either its data rows of every rung
(``--parallel data``) or every datum of its rungs (``--parallel temperatures``; replica
exchange then crosses to the neighbouring ranks); each chain's random numbers are its own
(``kaem/streams.py``), and each rank adds its share of the sums above.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaem.likelihood.posterior import KAEMPosterior
from kaem.nn.kan import fixed_parameters
from kaem.objectives.langevin import adapted_step_sizes, chain_mean, check_prior_term, start_step_sizes
from kaem.parallel.split import Split
from kaem.samplers import p_schedule, temperature_ladder, thermo_sample, ti_weights
from kaem.samplers.target import chain_rows
from kaem.samplers.thermo import SplitLadder
from kaem.streams import RowDraws, shared

if TYPE_CHECKING:  # the model is only a type here: it is built from the objectives' settings
    from kaem.model import KAEM


def thermo_loss_and_grad(model: KAEM, x: Any, z: Any, temps: Any, rule: str = "left", z_cd: Any = None,
                         exact_logZ: bool = False, rng: Any = None, noise: Any = None, rungs: Any = None,
                         split: Split | None = None) -> tuple[Any, Any]:
    """Thermodynamic-integration loss and its gradients, chains fixed.

    Args:
        x: (B, D) data (a rank's rows of the batch with ``split``).
        z: (K', Bc, *latent) samples of the power posteriors at the ladder rungs ``rungs``
            (default all K rungs of ``temps``, rung 0: prior samples, rung K−1: t = 1), Bc a
            multiple of B, chain b for datum b % B.
        temps: (K,) the whole ladder, t_0 = 0 and t_{K−1} = 1.
        rule: "left", "trapezoid" or "right" (see :func:`kaem.samplers.ti_weights`).
        z_cd / exact_logZ: the prior term, as in :func:`langevin_loss_and_grad` (added by the
            holder of the top rung).
        rng / noise: injection noise source (each row's numbers its own, ``kaem/streams.py``),
            or standard normals (K', Bc, D) (``pair``) or (K', Bc // B, D) (``sample``); only
            the rungs with c_k ≠ 0 are read.
        split: this rank's part of the batch (default all of it).
    Returns:
        loss (0-d array, this rank's share) and ll (K', Bc): log-likelihoods (with noise) of the
        rungs the quadrature uses, NaN in the others.
    """
    check_prior_term(z_cd, exact_logZ)
    xp = model.be.xp
    model.zero_grad()
    c = ti_weights(temps, rule)
    K = c.shape[0]
    rungs = list(range(K)) if rungs is None else [int(k) for k in rungs]
    if z.shape[0] != len(rungs) or not all(0 <= k < K for k in rungs):
        raise ValueError(f"{len(temps)} temperatures for {z.shape[0]} rungs {rungs}")
    bc = z.shape[1]
    split = split or Split.serial(x.shape[0])
    n_all = bc * split.batch // x.shape[0]  # chains per rung over all ranks
    used = [j for j, k in enumerate(rungs) if c[k] != 0.0]
    ll = xp.full((len(rungs), bc), xp.nan, dtype=z.dtype)
    loss = xp.zeros((), dtype=z.dtype)
    nz = None if noise is None else noise[used].reshape(-1, noise.shape[-1])
    if rng is not None and noise is None and model.lik.noise > 0:  # drawn on every rank, its rows or none
        if model.lik.sharing == "sample":  # one ξ per rung k, the rows of a (K, D) array
            nz = RowDraws(shared(rng), [(rungs[j], rungs[j] + 1) for j in used], K).standard_normal(
                (len(used), model.D), dtype=z.dtype)
        else:  # one ξ per (rung k, datum b), the rows of the (K·B, D) ladder population's array
            nz = RowDraws(shared(rng), [(rungs[j] * n_all + split.lo, rungs[j] * n_all + split.hi) for j in used],
                          K * n_all).standard_normal((len(used) * bc, model.D), dtype=z.dtype)
    if used:  # the rule's rungs: − Σ_k c_k Σ_b ll(x_b, z_{k,b}) / B
        loss = loss + _likelihood_terms(model, x, z, c, rungs, used, n_all, nz, ll)
    if K - 1 in rungs:  # the prior term on the t = 1 chains
        w_top = xp.full(bc, 1.0 / n_all, dtype=z.dtype)
        loss = loss + model.prior.prior_loss(z[rungs.index(K - 1)], w_top, z_cd=z_cd, exact_logZ=exact_logZ)
    return loss, ll


def _likelihood_terms(model: KAEM, x: Any, z: Any, c: Any, rungs: list, used: list, n_all: int, noise: Any,
                      ll: Any) -> Any:
    """− Σ_{k used} c_k Σ_b ll(x_b, z_{k,b}) / n_all with the injection noise ``noise`` (rows as
    ``log_lik_rows`` takes them, or None) and its gradients (into the generator's); fills the
    used rows of ll (K', Bc)."""
    xp = model.be.xp
    bc = z.shape[1]
    zu = z[used].reshape((len(used) * bc,) + z.shape[2:])
    g = model.generator.forward(model.prior.to_input(zu))
    ll_u = model.lik.log_lik_rows(chain_rows(x, zu.shape[0]), g, noise=noise, batch=x.shape[0])
    cw = xp.repeat(xp.asarray([c[rungs[j]] / n_all for j in used], dtype=ll_u.dtype), bc)  # c_k / Bc per row
    model.generator.backward(model.lik.backward_rows(-cw), need_dh=False)
    ll[used] = ll_u.reshape(len(used), bc)
    return -(cw * ll_u).sum()


@fixed_parameters()
def thermo_step(model: KAEM, x: Any, rng: Any, iteration: int = 0, n_updates: int = 1,
                state: dict | None = None, split: Split | None = None) -> tuple[Any, dict[str, Any]]:
    """One thermodynamic-integration gradient evaluation with the model's settings
    (``model.objective.thermo``); fills ``model.gradients()`` with this rank's share.

    ``iteration``/``n_updates`` place the ladder exponent p on its schedule; ``state``
    carries autoMALA's per-rung adapted θ₀ (``state["step_size"]``, (N_t,) on the device);
    ``split``: the data rows x holds, or the rungs this rank samples (default all).
    Returns the loss and diagnostics: "z" (B, *latent) the t = 1 chains of the whole batch,
    "w" (1, B), "accept" (autoMALA, NaN for ULA), "step", "swap" (replica-exchange
    acceptance rate), "p".
    """
    s = model.objective.thermo
    sampler, cd, xp = s.sampler, s.sampler.contrastive, model.be.xp
    split = split or Split.serial(x.shape[0])
    n_t, B, comm = s.num_temps, split.batch, split.comm
    k0, k1 = split.rungs(n_t)  # this rank's rungs among 1..N_t, as 0-based population rungs
    lo, hi = split.lo, split.hi
    p = p_schedule(iteration, max(n_updates, 1), s.p_start, s.p_end, s.num_cycles)
    temps = temperature_ladder(n_t, p)  # t_0 = 0 .. t_{N_t} = 1
    chains = RowDraws(rng, [(k * B + lo, k * B + hi) for k in range(k0, k1)], n_t * B)
    # one ITS pass over the (N_t + 1)·B rows: all of rung 0 (prior samples: contrastive draws
    # and the rule's t = 0 rung), then this rank's chains of its rungs (their inits)
    its = chains.rows([(0, B)] + [((k + 1) * B + lo, (k + 1) * B + hi) for k in range(k0, k1)], (n_t + 1) * B)
    z_all = model.sample_prior(its.n, its)
    z_prior, z0 = z_all[:B], z_all[B:]
    target = KAEMPosterior(model, x)
    kw = dict(exchange_every=s.exchange_every, exchange_rng=chains.rows([(lo, hi)], B),
              ladder=SplitLadder(comm, temps[1:], k0) if split.temperatures else None)
    diag: dict[str, Any] = {"p": p}
    if sampler.automala:
        theta0 = xp.repeat(start_step_sizes(xp, state, n_t, sampler.step_size, z_all.dtype)[k0:k1], hi - lo)
        zc, _, info = thermo_sample(target, z0, temps[1 + k0:1 + k1], s.steps_per_temp, theta0, chains,
                                    sampler="automala", n_unadjusted=sampler.n_unadjusted,
                                    bounds=sampler.step_bounds, eta_changerate=sampler.eta_changerate, **kw)
        am = info["automala"]
        if state is not None:  # each rung's median over its chains, on every rank
            steps = am.step_size_out.reshape(k1 - k0, hi - lo)
            state["step_size"] = (comm.allgather(adapted_step_sizes(xp, steps, k1 - k0)) if split.temperatures
                                  else adapted_step_sizes(xp, comm.allgather(steps.T).T, n_t))
        diag["accept"] = chain_mean(comm, am.acceptance_rate, n_t * B)
        diag["step"] = chain_mean(comm, am.mean_step, n_t * B)
    else:
        zc, _, info = thermo_sample(target, z0, temps[1 + k0:1 + k1], s.steps_per_temp, sampler.step_size, chains,
                                    sampler="ula", **kw)
        diag["accept"], diag["step"] = float("nan"), float(sampler.step_size)
    swaps = xp.stack([xp.asarray(info["swaps_accepted"], dtype=z_all.dtype),
                      xp.asarray(info["swaps_attempted"], dtype=z_all.dtype)])
    comm.allreduce_(swaps)
    diag["swap"] = xp.where(swaps[1] > 0, swaps[0] / xp.maximum(swaps[1], 1), xp.nan)
    mine = [0] * (not split.temperatures or comm.rank == 0) + [k + 1 for k in range(k0, k1)]  # ladder rungs held
    z = xp.concatenate([z_prior[None, lo:hi]] * (0 in mine) + [zc.reshape((k1 - k0, hi - lo) + zc.shape[1:])])
    loss, _ = thermo_loss_and_grad(model, x, z, temps, s.rule, z_cd=z_prior if cd else None, exact_logZ=not cd,
                                   rng=chains, rungs=mine, split=split)
    top = z[-1] if n_t in mine else z[:0, 0]  # the t = 1 chains of this rank, if it holds that rung
    diag["z"], diag["w"] = comm.allgather(top), xp.full((1, B), 1.0 / B, dtype=z.dtype)
    return loss, diag
