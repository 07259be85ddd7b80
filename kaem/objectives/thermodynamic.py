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
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaem.likelihood.posterior import KAEMPosterior
from kaem.samplers.target import chain_rows
from kaem.nn.kan import fixed_parameters
from kaem.objectives.langevin import adapted_step_sizes, check_prior_term, nanmean, start_step_sizes
from kaem.samplers import p_schedule, temperature_ladder, thermo_sample, ti_weights

if TYPE_CHECKING:  # the model is only a type here: it is built from the objectives' settings
    from kaem.model import KAEM


def thermo_loss_and_grad(model: KAEM, x: Any, z: Any, temps: Any, rule: str = "left", z_cd: Any = None,
                         exact_logZ: bool = False, rng: Any = None, noise: Any = None) -> tuple[Any, Any]:
    """Thermodynamic-integration loss and its gradients, chains fixed.

    Args:
        x: (B, D) data.
        z: (K, Bc, *latent) samples of the power posteriors at temps[0..K−1] (rung 0: prior
            samples, rung K−1: t = 1), Bc a multiple of B, chain b for datum b % B.
        temps: (K,) ladder, t_0 = 0 and t_{K−1} = 1.
        rule: "left", "trapezoid" or "right" (see :func:`kaem.samplers.ti_weights`).
        z_cd / exact_logZ: the prior term, as in :func:`langevin_loss_and_grad`.
        rng / noise: injection noise source, or standard normals (K, Bc, D) (``pair``) or
            (K, Bc // B, D) (``sample``); only the rungs with c_k ≠ 0 are read.
    Returns:
        loss (0-d array) and ll (K, Bc): log-likelihoods (with noise) of the rungs the
        quadrature uses, NaN in the others (the top rung of the left sum, rung 0 of the right).
    """
    check_prior_term(z_cd, exact_logZ)
    xp = model.be.xp
    model.zero_grad()
    K, bc = z.shape[:2]
    c = ti_weights(temps, rule)
    if c.shape[0] != K:
        raise ValueError(f"{c.shape[0]} temperatures for {K} rungs")
    used = [k for k in range(K) if c[k] != 0.0]
    zu = z[used].reshape((len(used) * bc,) + z.shape[2:])
    g = model.generator.forward(model.prior.to_input(zu))
    nz = None if noise is None else noise[used].reshape(-1, noise.shape[-1])
    ll_u = model.lik.log_lik_rows(chain_rows(x, zu.shape[0]), g, rng=rng, noise=nz, batch=x.shape[0])
    cw = xp.repeat(xp.asarray(c[used] / bc, dtype=ll_u.dtype), bc)  # c_k / Bc per row
    model.generator.backward(model.lik.backward_rows(-cw), need_dh=False)
    w_top = xp.full(bc, 1.0 / bc, dtype=ll_u.dtype)
    loss = model.prior.prior_loss(z[K - 1], w_top, z_cd=z_cd, exact_logZ=exact_logZ) - (cw * ll_u).sum()
    ll = xp.full((K, bc), xp.nan, dtype=ll_u.dtype)
    ll[used] = ll_u.reshape(len(used), bc)
    return loss, ll


@fixed_parameters()
def thermo_step(model: KAEM, x: Any, rng: Any, iteration: int = 0, n_updates: int = 1,
                state: dict | None = None) -> tuple[Any, dict[str, Any]]:
    """One thermodynamic-integration gradient evaluation with the model's settings
    (``model.objective.thermo``); fills ``model.gradients()``.

    ``iteration``/``n_updates`` place the ladder exponent p on its schedule; ``state``
    carries autoMALA's per-rung adapted θ₀ (``state["step_size"]``, (N_t,) on the device).
    Returns the loss and diagnostics: "z" (B, *latent) the t = 1 chains, "w" (1, B), "accept"
    (autoMALA, NaN for ULA), "step", "swap" (replica-exchange acceptance rate), "p".
    """
    s = model.objective.thermo
    sampler, cd, xp = s.sampler, s.sampler.contrastive, model.be.xp
    n_t, B = s.num_temps, x.shape[0]
    p = p_schedule(iteration, max(n_updates, 1), s.p_start, s.p_end, s.num_cycles)
    temps = temperature_ladder(n_t, p)  # t_0 = 0 .. t_{N_t} = 1
    z_all = model.sample_prior((n_t + 1) * B, rng)  # rung 0 = prior samples; rungs 1.. inits
    target = KAEMPosterior(model, x)
    diag: dict[str, Any] = {"p": p}
    if sampler.automala:
        theta0 = xp.repeat(start_step_sizes(xp, state, n_t, sampler.step_size, z_all.dtype), B)
        zc, _, info = thermo_sample(
            target, z_all[B:], temps[1:], s.steps_per_temp, theta0, rng, exchange_every=s.exchange_every,
            sampler="automala", n_unadjusted=sampler.n_unadjusted, bounds=sampler.step_bounds,
            eta_changerate=sampler.eta_changerate)
        am = info["automala"]
        if state is not None:
            state["step_size"] = adapted_step_sizes(xp, am.step_size_out, n_t)
        diag["accept"], diag["step"] = nanmean(xp, am.acceptance_rate), am.mean_step.mean()
    else:
        zc, _, info = thermo_sample(target, z_all[B:], temps[1:], s.steps_per_temp, sampler.step_size, rng,
                                    exchange_every=s.exchange_every, sampler="ula")
        diag["accept"], diag["step"] = float("nan"), float(sampler.step_size)
    diag["swap"] = info["swap_rate"]
    z = z_all.reshape((n_t + 1, B) + z_all.shape[1:]).copy()
    z[1:] = zc.reshape((n_t, B) + zc.shape[1:])
    loss, _ = thermo_loss_and_grad(model, x, z, temps, s.rule,
                                   z_cd=z[0] if cd else None, exact_logZ=not cd, rng=rng)
    diag["z"], diag["w"] = z[-1], xp.full((1, B), 1.0 / B, dtype=z.dtype)
    return loss, diag
