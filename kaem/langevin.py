"""Langevin-MLE and thermodynamic-integration objectives (spec §4, §4.2–4.4).

Both follow the pattern of ``kaem/importance.py``: a ``*_loss_and_grad`` function that
takes the posterior samples as constants (no gradient flows through the sampler), so it
is an ordinary differentiable function of the parameters and is checked by finite
differences; and a ``*_step`` function that runs the sampler with the model's config and
returns ``(loss, diag)`` like ``is_step``.

Langevin MLE (``POST_LANGEVIN.use_langevin = true``, ``num_temps = 1``). Chain i targets
the posterior of datum b(i) = i % B (:class:`kaem.posterior.KAEMPosterior`), started by
inverse transform from the prior and moved ``POST_LANGEVIN.iters`` ULA steps of size
``initial_step_size`` (or autoMALA iterations with ``use_autoMALA``). With N chains z_i:

    L = − (1/N) Σ_i [ log p̃(z_i) + ll(x_b(i), z_i) ]  +  prior term

Thermodynamic integration (``THERMODYNAMIC_INTEGRATION.num_temps`` = N_t > 1). Ladder
t_k = (k/N_t)^p, k = 0..N_t, p from :func:`kaem.samplers.p_schedule` over training.
Rung 0 (t = 0, the prior) is sampled exactly by inverse transform; rungs 1..N_t are one
population of N_t·B chains sampled together by :func:`kaem.samplers.thermo_sample`
(``N_langevin_per_temp`` steps, replica exchange every ``replica_exchange_frequency``).
With z_{k,b} the chain of datum b at t_k:

    L = − (1/B) Σ_b Σ_{k=0}^{N_t} c_k ll(x_b, z_{k,b})  −  (1/B) Σ_b log p̃(z_{N_t,b})  +  prior term

with quadrature weights c_k of ∫_0^1 E_t[ll] dt (each interval counted once, spec §7.4):
left sum c_k = Δt_{k+1} (k < N_t), c_{N_t} = 0; trapezoid c_k = ½(Δt_k + Δt_{k+1});
right sum c_0 = 0, c_k = Δt_k (``integration_rule = right``: the reference's sum read
through its indexing bugs, which gives the t = 1 rung the last interval where the left sum
gives it none).

Prior term (both objectives), ``TRAINING.contrastive_divergence_training``:
    true:  + (1/S') Σ_s log p̃(z'_s), z' fresh prior draws (Langevin: B of them, as the
           reference; thermo: the rung-0 prior samples, which are such draws);
    false: + Σ_{q,p} log Z_{q,p} (quadrature, differentiated exactly).

Injection noise (σ_n) is used in the losses' likelihood (fresh per row, or per group of
rows with ``GeneratorModel.noise_sharing = sample``, or given as ``noise`` in tests) but
not inside the sampler (see ``kaem/posterior.py``).

Each ``*_step`` runs inside :func:`kaem.kan.fixed_parameters`: the parameters are constant
during a step, so every KAN layer builds its spline weights once for the sampler's many
evaluations and the loss.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .importance import is_step
from .kan import fixed_parameters
from .model import KAEM
from .objective import prior_loss_and_grad
from .posterior import KAEMPosterior
from .samplers import automala, p_schedule, temperature_ladder, thermo_sample, ula

MODES = ("is", "ula", "automala", "thermo")


def objective_mode(cfg: Any) -> str:
    """The training objective a config selects: "thermo" if num_temps > 1 (its inner
    sampler is autoMALA if use_autoMALA, else ULA), else "automala"/"ula" if
    use_langevin, else "is" (use_autoMALA alone does not leave IS, as in the reference)."""
    if cfg["THERMODYNAMIC_INTEGRATION"]["num_temps"] > 1:
        return "thermo"
    pl = cfg["POST_LANGEVIN"]
    if pl["use_langevin"]:
        return "automala" if pl["use_autoMALA"] else "ula"
    return "is"


# ----------------------------------------------------------------------------- losses

def _tile_rows(xp: Any, x: Any, n: int) -> Any:
    """x_b(i) for chains i = 0..n−1, b(i) = i % B."""
    if n % x.shape[0]:
        raise ValueError(f"{n} chains is not a multiple of the batch size {x.shape[0]}")
    return x if n == x.shape[0] else xp.tile(x, (n // x.shape[0], 1))


def _check_prior_term(z_cd: Any, exact_logZ: bool) -> None:
    if (z_cd is None) == (not exact_logZ):
        raise ValueError("give exactly one prior term: z_cd (contrastive divergence) or exact_logZ=True")


def langevin_loss_and_grad(model: KAEM, x: Any, z: Any, z_cd: Any = None, exact_logZ: bool = False,
                           rng: Any = None, noise: Any = None) -> tuple[Any, Any]:
    """Langevin-MLE loss and its gradients (into ``model.gradients()``), chains fixed.

    Args:
        x: (B, D) data.  z: (N, Q, P) chains, N a multiple of B, chain i for datum i % B.
        z_cd: (S', Q, P) fresh prior draws for the contrastive-divergence term, or None
            together with ``exact_logZ=True``.
        rng / noise: injection noise source, or the standard normals themselves: (N, D)
            with ``noise_sharing = pair``, (N // B, D) with ``sample`` (chains r·B + b share
            ξ_r across the batch).
    Returns:
        loss (0-d array) and ll (N,), the per-chain log-likelihoods (with noise).
    """
    _check_prior_term(z_cd, exact_logZ)
    xp = model.be.xp
    model.zero_grad()
    n = z.shape[0]
    g = model.generator.forward(model.prior.to_input(z))
    ll = model.lik.log_lik_rows(_tile_rows(xp, x, n), g, rng=rng, noise=noise, batch=x.shape[0])
    w = xp.full(n, 1.0 / n, dtype=ll.dtype)
    model.generator.backward(model.lik.backward_rows(-w), need_dh=False)
    loss = prior_loss_and_grad(model, z, w, z_cd, exact_logZ) - ll.mean()
    return loss, ll


def ti_weights(temps: Any, rule: str = "left") -> np.ndarray:
    """Quadrature weights c_k (K,) of ∫_0^1 E_t[ll] dt on the ladder temps (K,), host float64.

    left: c_k = t_{k+1} − t_k for k < K−1, c_{K−1} = 0 (t_0 samples are prior samples);
    trapezoid: c_k = ½(Δt_k + Δt_{k+1}) with Δt_0 = Δt_K = 0;
    right: c_0 = 0, c_k = t_k − t_{k−1}. Each interval once (spec §7.4).
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
        raise ValueError(f"unknown integration_rule {rule!r}; valid: left, trapezoid, right")
    return c


def thermo_loss_and_grad(model: KAEM, x: Any, z: Any, temps: Any, rule: str = "left", z_cd: Any = None,
                         exact_logZ: bool = False, rng: Any = None, noise: Any = None) -> tuple[Any, Any]:
    """Thermodynamic-integration loss and its gradients, chains fixed.

    Args:
        x: (B, D) data.
        z: (K, Bc, Q, P) samples of the power posteriors at temps[0..K−1] (rung 0: prior
            samples, rung K−1: t = 1), Bc a multiple of B, chain b for datum b % B.
        temps: (K,) ladder, t_0 = 0 and t_{K−1} = 1.
        rule: "left", "trapezoid" or "right" (see :func:`ti_weights`).
        z_cd / exact_logZ: the prior term, as in :func:`langevin_loss_and_grad`.
        rng / noise: injection noise source, or standard normals (K, Bc, D) (``pair``) or
            (K, Bc // B, D) (``sample``); only the rungs with c_k ≠ 0 are read.
    Returns:
        loss (0-d array) and ll (K, Bc): log-likelihoods (with noise) of the rungs the
        quadrature uses, NaN in the others (the top rung of the left sum, rung 0 of the right).
    """
    _check_prior_term(z_cd, exact_logZ)
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
    ll_u = model.lik.log_lik_rows(_tile_rows(xp, x, zu.shape[0]), g, rng=rng, noise=nz, batch=x.shape[0])
    cw = xp.repeat(xp.asarray(c[used] / bc, dtype=ll_u.dtype), bc)  # c_k / Bc per row
    model.generator.backward(model.lik.backward_rows(-cw), need_dh=False)
    w_top = xp.full(bc, 1.0 / bc, dtype=ll_u.dtype)
    loss = prior_loss_and_grad(model, z[K - 1], w_top, z_cd, exact_logZ) - (cw * ll_u).sum()
    ll = xp.full((K, bc), xp.nan, dtype=ll_u.dtype)
    ll[used] = ll_u.reshape(len(used), bc)
    return loss, ll


# ----------------------------------------------------------------------------- steps

# Diagnostics and the adapted steps stay on the device (0-d or (n_rungs,) arrays): the
# trainer reads them once per log line / epoch, so a step never waits for the device.

def _nanmean(xp: Any, a: Any) -> Any:
    """Mean of the finite entries of a (0-d; NaN if there are none), fixed shapes."""
    ok = xp.isfinite(a)
    n = ok.sum()
    return xp.where(n > 0, xp.where(ok, a, 0).sum() / xp.maximum(n, 1), xp.nan)


def _step_sizes(xp: Any, state: dict | None, n_rungs: int, default: float, dtype: Any) -> Any:
    """Per-rung starting step sizes (n_rungs,): the adapted ones in ``state`` (a device array,
    or a list after a checkpoint restore) if they fit, else ``default``."""
    s = (state or {}).get("step_size")
    if s is not None and len(s) == n_rungs:
        return xp.asarray(s, dtype=dtype)
    return xp.full(n_rungs, default, dtype=dtype)


def _adapted(xp: Any, step_out: Any, n_rungs: int) -> Any:
    """Median of the adapted per-chain steps within each rung (chains are temperature-major):
    the next call's θ₀, (n_rungs,). Chains restart from the prior every iteration, so a
    per-rung value (not per chain) is what carries over; the median resists the doubling
    search's outliers."""
    return xp.median(step_out.reshape(n_rungs, -1), axis=1)


@fixed_parameters()
def langevin_step(model: KAEM, x: Any, rng: Any, state: dict | None = None) -> tuple[Any, dict[str, Any]]:
    """One Langevin-MLE gradient evaluation with the model's config (ULA, or autoMALA when
    ``POST_LANGEVIN.use_autoMALA``); fills ``model.gradients()``.

    ``state`` (a dict, updated in place) carries autoMALA's adapted step size θ₀ from one
    training iteration to the next (``state["step_size"]``, a one-element device array).
    Returns the loss and diagnostics: "z" (B, Q, P) final chains, "w" (1, B) their weights
    (1/B), "accept" (mean autoMALA acceptance probability; NaN for ULA), "step" (ULA η, or
    autoMALA's mean accepted leapfrog step θ), "swap" (NaN: no ladder).
    """
    cfg = model.cfg
    pl, cd = cfg["POST_LANGEVIN"], cfg["TRAINING"]["contrastive_divergence_training"]
    xp = model.be.xp
    B = x.shape[0]
    z_all = model.sample_prior(2 * B if cd else B, rng)  # chain inits (+ CD draws), one ITS pass
    z0, z_cd = (z_all[:B], z_all[B:]) if cd else (z_all, None)
    target = KAEMPosterior(model, x)
    diag: dict[str, Any] = {"swap": float("nan")}
    if pl["use_autoMALA"]:
        theta0 = _step_sizes(xp, state, 1, pl["initial_step_size"], z0.dtype)[0]
        z, info = automala(target, z0, 1.0, theta0, pl["iters"], rng, n_unadjusted=pl["N_unadjusted"],
                           bounds=tuple(pl["step_size_bounds"]), eta_changerate=pl["autoMALA_η_changerate"])
        if state is not None:
            state["step_size"] = _adapted(xp, info.step_size_out, 1)
        diag["accept"], diag["step"] = _nanmean(xp, info.acceptance_rate), info.mean_step.mean()
    else:
        z = ula(target, z0, 1.0, pl["initial_step_size"], pl["iters"], rng)
        diag["accept"], diag["step"] = float("nan"), float(pl["initial_step_size"])
    loss, _ = langevin_loss_and_grad(model, x, z, z_cd=z_cd, exact_logZ=not cd, rng=rng)
    diag["z"], diag["w"] = z, xp.full((1, B), 1.0 / B, dtype=z.dtype)
    return loss, diag


ula_step = langevin_step  # the name used in the issue; autoMALA is selected by the config


@fixed_parameters()
def thermo_step(model: KAEM, x: Any, rng: Any, iteration: int = 0, n_updates: int = 1,
                state: dict | None = None) -> tuple[Any, dict[str, Any]]:
    """One thermodynamic-integration gradient evaluation; fills ``model.gradients()``.

    ``iteration``/``n_updates`` place the ladder exponent p on its schedule; ``state``
    carries autoMALA's per-rung adapted θ₀ (``state["step_size"]``, (N_t,) on the device).
    Returns the loss and diagnostics: "z" (B, Q, P) the t = 1 chains, "w" (1, B), "accept"
    (autoMALA, NaN for ULA), "step", "swap" (replica-exchange acceptance rate), "p".
    """
    cfg = model.cfg
    ti, pl = cfg["THERMODYNAMIC_INTEGRATION"], cfg["POST_LANGEVIN"]
    cd = cfg["TRAINING"]["contrastive_divergence_training"]
    xp = model.be.xp
    n_t, B = ti["num_temps"], x.shape[0]
    p = p_schedule(iteration, max(n_updates, 1), ti["p_start"], ti["p_end"], ti["num_cycles"])
    temps = temperature_ladder(n_t, p)  # t_0 = 0 .. t_{N_t} = 1
    z_all = model.sample_prior((n_t + 1) * B, rng)  # rung 0 = prior samples; rungs 1.. inits
    target = KAEMPosterior(model, x)
    diag: dict[str, Any] = {"p": p}
    if pl["use_autoMALA"]:
        theta0 = xp.repeat(_step_sizes(xp, state, n_t, pl["initial_step_size"], z_all.dtype), B)
        zc, _, info = thermo_sample(
            target, z_all[B:], temps[1:], ti["N_langevin_per_temp"], theta0, rng,
            exchange_every=ti["replica_exchange_frequency"], sampler="automala",
            n_unadjusted=pl["N_unadjusted"], bounds=tuple(pl["step_size_bounds"]),
            eta_changerate=pl["autoMALA_η_changerate"])
        am = info["automala"]
        if state is not None:
            state["step_size"] = _adapted(xp, am.step_size_out, n_t)
        diag["accept"], diag["step"] = _nanmean(xp, am.acceptance_rate), am.mean_step.mean()
    else:
        zc, _, info = thermo_sample(target, z_all[B:], temps[1:], ti["N_langevin_per_temp"],
                                    pl["initial_step_size"], rng,
                                    exchange_every=ti["replica_exchange_frequency"], sampler="ula")
        diag["accept"], diag["step"] = float("nan"), float(pl["initial_step_size"])
    diag["swap"] = info["swap_rate"]
    z = z_all.reshape((n_t + 1, B) + z_all.shape[1:]).copy()
    z[1:] = zc.reshape((n_t, B) + zc.shape[1:])
    loss, _ = thermo_loss_and_grad(model, x, z, temps, ti["integration_rule"],
                                   z_cd=z[0] if cd else None, exact_logZ=not cd, rng=rng)
    diag["z"], diag["w"] = z[-1], xp.full((1, B), 1.0 / B, dtype=z.dtype)
    return loss, diag


def training_step(model: KAEM, x: Any, rng: Any, iteration: int = 0, n_updates: int = 1,
                  state: dict | None = None) -> tuple[Any, dict[str, Any]]:
    """The gradient evaluation of the objective the config selects (:func:`objective_mode`):
    ``is_step``, :func:`langevin_step` or :func:`thermo_step`."""
    mode = objective_mode(model.cfg)
    if mode == "is":
        return is_step(model, x, rng)
    if mode == "thermo":
        return thermo_step(model, x, rng, iteration, n_updates, state)
    return langevin_step(model, x, rng, state)
