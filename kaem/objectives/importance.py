"""Maximum likelihood by importance sampling (method §4 and §4.1).

With S prior samples z_s shared by the batch, self-normalised weights
w[b, s] = softmax_s(log p(x_b | z_s)) (resampled where the ESS is low), and the weights
held constant, the loss is

    L = − (1/B) Σ_b Σ_s w[b,s] · ( log p̃(z_s) + ll[b,s] )  +  prior term,

    prior term = (1/S') Σ_s' log p̃(z'_s')     contrastive divergence, z' fresh prior draws
               = Σ_{q,p} log Z_{q,p}          exact: quadrature log Z differentiated

Its gradient is the Monte Carlo estimate of −∇ log p(x). Because the weights and samples
are constants, ``is_loss_and_grad`` is an ordinary differentiable function of the
parameters, which is what the finite-difference tests check.

Over several processes (``kaem/parallel``) every rank draws the same S samples from the
shared stream and holds the rows [lo, hi) of the batch: its loss and gradients are those
rows' share of the sums above (1/B with the global B), and the shares add up.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from kaem.nn.kan import fixed_parameters
from kaem.objectives.resampling import importance_weights, systematic_indices
from kaem.parallel.split import Split
from kaem.streams import RowDraws

if TYPE_CHECKING:  # the model is only a type here: it is built from the objectives' settings
    from kaem.model import KAEM


def is_loss_and_grad(model: KAEM, x: Any, z: Any, weigh: Callable[[Any], Any], z_cd: Any = None,
                     exact_logZ: bool = False, rng: Any = None, noise: Any = None,
                     batch: int | None = None) -> tuple[Any, Any, Any]:
    """Loss and its gradients (into ``model.gradients()``) for fixed samples and weights.

    Args:
        x: (B, D) data (a rank's rows of a batch of ``batch``, default B).
        z: (S, Q, P) prior samples shared by the batch.
        weigh: maps ll (B, S) to the weights (B, S) (rows sum to 1), treated as constants.
        z_cd: (S', Q, P) fresh prior samples for the contrastive-divergence prior term, or
            None together with ``exact_logZ=True`` for the quadrature alternative.
        rng / noise: injection noise source, or the normals themselves: (B, S, D) with
            ``noise_sharing = pair``, (S, D) with ``sample``.
    Returns:
        loss (0-d array), ll (B, S), weights (B, S).
    """
    model.zero_grad()
    B = x.shape[0] if batch is None else batch

    # likelihood term: − (1/B) Σ w·ll, through the generator
    g = model.generator.forward(model.prior.to_input(z))
    ll = model.lik.log_lik_pairs(x, g, rng=rng, noise=noise)
    w = weigh(ll)
    model.generator.backward(model.lik.backward_pairs(-w / B), need_dh=False)

    # prior term on the posterior samples, weighted by Σ_b w[b,s]/B, + the prior term
    loss = model.prior.prior_loss(z, w.sum(axis=0) / B, z_cd=z_cd, exact_logZ=exact_logZ) - (w * ll).sum() / B
    return loss, ll, w


@fixed_parameters()  # W = w_sp ⊙ c built once for the step's forwards and backwards
def is_step(model: KAEM, x: Any, rng: Any, split: Split | None = None) -> tuple[Any, dict[str, Any]]:
    """One importance-sampling gradient evaluation with the model's settings
    (``model.objective.importance``).

    Draws S prior samples (and S fresh ones for contrastive divergence) from the shared
    stream ``rng``, weighs them with the resampler and threshold (each row's uniforms its
    own, ``kaem/streams.py``), and fills ``model.gradients()`` with this rank's share
    (``split``: the rows x holds; default all). Returns the loss (this rank's share) and
    device-side diagnostics summed over the ranks: mean ESS, fraction of rows resampled, and
    the samples z with their weights w (1, S) (for grid updating).
    """
    s = model.objective.importance
    split = split or Split.serial(x.shape[0])
    S, cd = s.samples, s.contrastive
    z_all = model.sample_prior(2 * S if cd else S, rng)  # one inverse-transform pass, shared
    z, z_cd = (z_all[:S], z_all[S:]) if cd else (z_all, None)
    rows = RowDraws(rng, [(split.lo, split.hi)], split.batch)  # per-datum draws
    xp = model.be.xp
    stats = xp.zeros(2, dtype=z.dtype)

    def weigh(ll: Any) -> Any:
        w, e, low = importance_weights(ll, s.ess_threshold, s.resampler, rows)
        stats[0], stats[1] = e.sum(), low.sum()
        return w

    loss, _, w = is_loss_and_grad(model, x, z, weigh, z_cd=z_cd, exact_logZ=not cd, rng=rows, batch=split.batch)
    col = w.sum(axis=0, keepdims=True)  # the samples' posterior weights, (1, S), summed over ranks
    split.comm.allreduce_(stats, col)
    diag = {"ess": stats[0] / split.batch, "resampled": stats[1] / split.batch, "z": z, "w": col / split.batch}
    return loss, diag


def posterior_draws(z: Any, w: Any, n: int, rng: Any) -> Any:
    """n draws from the batch's importance-sampling posterior (1/B) Σ_b Σ_s w[b,s] δ(z_s):
    systematic resampling of the column-mean weights; z (S, Q, P), w (B, S) -> (n, Q, P).
    These are the samples grid updating fits to in IS mode."""
    idx = systematic_indices(w.mean(axis=0)[None, :], n, rng)[0]
    return z[idx]
