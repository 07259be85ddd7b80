"""Langevin maximum likelihood (method §4, §4.2–4.3): per-datum posterior chains by ULA or
autoMALA, then the loss with the chains held constant.

Like ``kaem/objectives/importance.py``: ``langevin_loss_and_grad`` takes the posterior
samples as constants (no gradient flows through the sampler), so it is an ordinary
differentiable function of the parameters, checked by finite differences; and
``langevin_step`` runs the sampler with the model's config and returns ``(loss, diag)``.

Selected by ``POST_LANGEVIN.use_langevin = true`` with ``num_temps = 1``. Chain i targets
the posterior of datum b(i) = i % B (:class:`kaem.likelihood.posterior.KAEMPosterior`),
started by inverse transform from the prior and moved ``POST_LANGEVIN.iters`` ULA steps of
size ``initial_step_size`` (or autoMALA iterations with ``use_autoMALA``). With N chains z_i:

    L = − (1/N) Σ_i [ log p̃(z_i) + ll(x_b(i), z_i) ]  +  prior term

Prior term, ``TRAINING.contrastive_divergence_training``:
    true:  + (1/S') Σ_s log p̃(z'_s), z' fresh prior draws (B of them, as the reference);
    false: + Σ_{q,p} log Z_{q,p} (quadrature, differentiated exactly).

Injection noise (σ_n) is used in the loss's likelihood (fresh per row, or per group of rows
with ``GeneratorModel.noise_sharing = sample``, or given as ``noise`` in tests) but not
inside the sampler (see ``kaem/likelihood/posterior.py``).

The step runs inside :func:`kaem.nn.kan.fixed_parameters`: the parameters are constant
during a step, so the spline weights may be built once for the sampler's many evaluations.

Over several processes (``kaem/parallel``) a rank holds the chains of its data rows, each
chain's random numbers its own (``kaem/streams.py``), and adds its share of the loss (1/N
with the global N); the contrastive draws come from the shared stream.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaem.backend import array_module

from kaem.likelihood.posterior import KAEMPosterior
from kaem.samplers.target import chain_rows
from kaem.nn.kan import fixed_parameters
from kaem.parallel.split import Split
from kaem.samplers import automala, ula
from kaem.streams import RowDraws

if TYPE_CHECKING:  # the model is only a type here: it is built from the objectives' settings
    from kaem.model import KAEM


def check_prior_term(z_cd: Any, exact_logZ: bool) -> None:
    """Exactly one prior term: contrastive-divergence draws ``z_cd`` or the exact log Z."""
    if (z_cd is None) == (not exact_logZ):
        raise ValueError("give exactly one prior term: z_cd (contrastive divergence) or exact_logZ=True")


def langevin_loss_and_grad(model: KAEM, x: Any, z: Any, z_cd: Any = None, exact_logZ: bool = False,
                           rng: Any = None, noise: Any = None, chains: int | None = None) -> tuple[Any, Any]:
    """Langevin-MLE loss and its gradients (into ``model.gradients()``), chains fixed.

    Args:
        x: (B, D) data.  z: (N, *latent) chains, N a multiple of B, chain i for datum i % B
            (a rank's chains of ``chains`` in all, default N).
        z_cd: (S', *latent) fresh prior draws for the contrastive-divergence term, or None
            together with ``exact_logZ=True``.
        rng / noise: injection noise source, or the standard normals themselves: (N, D)
            with ``noise_sharing = pair``, (N // B, D) with ``sample`` (chains r·B + b share
            ξ_r across the batch).
    Returns:
        loss (0-d array) and ll (N,), the per-chain log-likelihoods (with noise).
    """
    check_prior_term(z_cd, exact_logZ)
    xp = model.be.xp
    model.zero_grad()
    n = z.shape[0]
    g = model.generator.forward(model.prior.to_input(z))
    ll = model.lik.log_lik_rows(chain_rows(x, n), g, rng=rng, noise=noise, batch=x.shape[0])
    w = xp.full(n, 1.0 / (n if chains is None else chains), dtype=ll.dtype)
    model.generator.backward(model.lik.backward_rows(-w), need_dh=False)
    loss = model.prior.prior_loss(z, w, z_cd=z_cd, exact_logZ=exact_logZ) - w @ ll
    return loss, ll


# Diagnostics and the adapted steps stay on the device (0-d or (n_rungs,) arrays): the
# trainer reads them once per log line / epoch, so a step never waits for the device.

def start_step_sizes(xp: Any, state: dict | None, n_rungs: int, default: float, dtype: Any) -> Any:
    """Per-rung starting step sizes (n_rungs,): the adapted ones in ``state`` (a device array,
    or a list after a checkpoint restore) if they fit, else ``default``."""
    s = (state or {}).get("step_size")
    if s is not None and len(s) == n_rungs:
        return xp.asarray(s, dtype=dtype)
    return xp.full(n_rungs, default, dtype=dtype)


def adapted_step_sizes(xp: Any, step_out: Any, n_rungs: int) -> Any:
    """Median of the adapted per-chain steps within each rung (chains are temperature-major):
    the next call's θ₀, (n_rungs,). Chains restart from the prior every iteration, so a
    per-rung value (not per chain) is what carries over; the median resists the doubling
    search's outliers."""
    return xp.median(step_out.reshape(n_rungs, -1), axis=1)


@fixed_parameters()
def langevin_step(model: KAEM, x: Any, rng: Any, state: dict | None = None,
                  split: Split | None = None) -> tuple[Any, dict[str, Any]]:
    """One Langevin-MLE gradient evaluation with the model's settings
    (``model.objective.langevin``: ULA, or autoMALA); fills ``model.gradients()``.

    ``state`` (a dict, updated in place) carries autoMALA's adapted step size θ₀ from one
    training iteration to the next (``state["step_size"]``, a one-element device array).
    ``split``: the data rows x holds (default all). Returns this rank's share of the loss
    and diagnostics: "z" (B, *latent) the final chains of every rank, "w" (1, B) their
    weights (1/B), "accept" (mean autoMALA acceptance probability; NaN for ULA), "step" (ULA
    η, or autoMALA's mean accepted leapfrog step θ), "swap" (NaN: no ladder).
    """
    s = model.objective.langevin
    cd, xp = s.contrastive, model.be.xp
    split = split or Split.serial(x.shape[0])
    B, comm = split.batch, split.comm
    chains = RowDraws(rng, [(split.lo, split.hi)], B)  # each chain's numbers its own
    # one ITS pass: this rank's chain inits, then (contrastive divergence) all B shared draws
    z_all = model.sample_prior(split.local + (B if cd else 0), chains.rows([(split.lo, split.hi)] + ([(B, 2 * B)] if cd else []), 2 * B if cd else B))
    z0, z_cd = (z_all[:split.local], z_all[split.local:]) if cd else (z_all, None)
    target = KAEMPosterior(model, x)
    diag: dict[str, Any] = {"swap": float("nan")}
    if s.automala:
        theta0 = start_step_sizes(xp, state, 1, s.step_size, z0.dtype)[0]
        z, info = automala(target, z0, 1.0, theta0, s.steps, chains, n_unadjusted=s.n_unadjusted,
                           bounds=s.step_bounds, eta_changerate=s.eta_changerate)
        steps = comm.allgather(info.step_size_out)
        if state is not None:
            state["step_size"] = adapted_step_sizes(xp, steps, 1)
        diag["accept"] = chain_mean(comm, info.acceptance_rate, B)
        diag["step"] = chain_mean(comm, info.mean_step, B)
    else:
        z = ula(target, z0, 1.0, s.step_size, s.steps, chains)
        diag["accept"], diag["step"] = float("nan"), float(s.step_size)
    loss, _ = langevin_loss_and_grad(model, x, z, z_cd=z_cd, exact_logZ=not cd, rng=chains, chains=B)
    diag["z"], diag["w"] = comm.allgather(z), xp.full((1, B), 1.0 / B, dtype=z.dtype)
    return loss, diag


def chain_mean(comm: Any, a: Any, n: int) -> Any:
    """The mean over all ranks' chains of a per-chain statistic a (this rank's chains), the
    non-finite entries left out (NaN if every entry is)."""
    xp = array_module(a)
    ok = xp.isfinite(a)
    sums = xp.stack([xp.where(ok, a, 0).sum(), ok.sum().astype(a.dtype)])
    comm.allreduce_(sums)
    return xp.where(sums[1] > 0, sums[0] / xp.maximum(sums[1], 1), xp.nan)
