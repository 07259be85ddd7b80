"""Injection-noise sharing (GeneratorModel.noise_sharing = pair | sample).

* Each ll[b, s] has the same law in both modes: with out_act = none it is a scaled
  non-central χ² known in closed form (one-sample KS per pair and mode), and with the
  sigmoid the two modes are compared with each other (two-sample KS per pair).
  KS critical values come from the sample size and a Bonferroni-corrected level; seeds
  are fixed.
* Only the correlation across the batch differs: two identical data get identical
  log-likelihoods under ``sample`` and different ones under ``pair``.
* The new backward passes (matrix-product ``sample`` form, dense ``pair`` form) against
  finite differences, alone and through the IS, Langevin and thermodynamic losses.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from conftest import randomise, tiny_config
from gradcheck import check_grad
from kaem.objectives.importance import is_loss_and_grad
from kaem.objectives import langevin_loss_and_grad, thermo_loss_and_grad
from kaem.likelihood.gaussian import GaussianLikelihood, apply_output_activation
from kaem.model import KAEM
from kaem.samplers import temperature_ladder

MODES = ("pair", "sample")
ALPHA = 1e-3  # family-wise level of each KS test below


def _ks_crit(n: int, m: int | None, alpha: float) -> float:
    """Asymptotic KS critical value at level alpha: one sample of n, or two of n and m."""
    eff = n if m is None else n * m / (n + m)
    return math.sqrt(-math.log(alpha / 2) / (2 * eff))


def _draws(lik, x, g, n_rep, seed):
    """n_rep independent evaluations of ll (B, S) -> (n_rep, B, S)."""
    rng = np.random.default_rng(seed)
    return np.stack([lik.log_lik_pairs(x, g, rng=rng) for _ in range(n_rep)])


def test_each_pair_is_the_closed_form_noncentral_chi2_in_both_modes():
    """out_act = none: −2σ²·ll/σ_n² = ‖(x − g)/σ_n − ξ‖² ~ χ²_D(λ = ‖x − g‖²/σ_n²)."""
    rng = np.random.default_rng(0)
    B, S, D, n = 2, 3, 5, 2000
    sigma, sn = 0.3, 0.2
    x, g = rng.random((B, D)), rng.random((S, D))
    lam = (((x[:, None] - g[None]) / sn) ** 2).sum(-1)  # (B, S)
    crit = _ks_crit(n, None, ALPHA / (2 * B * S))
    for mode in MODES:
        lik = GaussianLikelihood(sigma, sn, "none", sharing=mode)
        q = -2 * sigma ** 2 * _draws(lik, x, g, n, seed=1) / sn ** 2
        for b in range(B):
            for s in range(S):
                d = stats.kstest(q[:, b, s], stats.ncx2(D, lam[b, s]).cdf).statistic
                assert d < crit, (mode, b, s, d, crit)


def test_both_modes_give_each_pair_the_same_law_with_sigmoid():
    rng = np.random.default_rng(2)
    B, S, D, n = 2, 3, 8, 2000
    x, g = rng.random((B, D)), rng.standard_normal((S, D))
    lp = _draws(GaussianLikelihood(0.1, 0.5, "sigmoid", "pair"), x, g, n, seed=3)
    ls = _draws(GaussianLikelihood(0.1, 0.5, "sigmoid", "sample"), x, g, n, seed=4)
    crit = _ks_crit(n, n, ALPHA / (B * S))
    for b in range(B):
        for s in range(S):
            assert stats.ks_2samp(lp[:, b, s], ls[:, b, s]).statistic < crit, (b, s)


def test_sample_mode_shares_the_noise_across_the_batch():
    rng = np.random.default_rng(5)
    x1, g = rng.random((1, 6)), rng.standard_normal((4, 6))
    x = np.concatenate([x1, x1])  # the same datum twice
    ls = GaussianLikelihood(0.1, 0.3, "sigmoid", "sample").log_lik_pairs(x, g, rng=rng)
    lp = GaussianLikelihood(0.1, 0.3, "sigmoid", "pair").log_lik_pairs(x, g, rng=rng)
    np.testing.assert_allclose(ls[0], ls[1], rtol=1e-12)
    assert np.abs(lp[0] - lp[1]).min() > 1e-6


@pytest.mark.parametrize("out_act", ["sigmoid", "tanh", "none"])
def test_pair_values_with_given_noise(out_act):
    """Both modes against the definition, with the noise passed in (pair: (B,S,D), sample: (S,D))."""
    rng = np.random.default_rng(6)
    B, S, D, sigma, sn = 3, 4, 5, 0.2, 0.3
    x, g = rng.random((B, D)), rng.standard_normal((S, D))
    xi = rng.standard_normal((B, S, D))
    y = apply_output_activation(out_act, g[None] + sn * xi)
    want = -((x[:, None] - y) ** 2).sum(-1) / (2 * sigma ** 2)
    got = GaussianLikelihood(sigma, sn, out_act, "pair").log_lik_pairs(x, g, noise=xi)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    y = apply_output_activation(out_act, g + sn * xi[0])
    want = -((x[:, None] - y[None]) ** 2).sum(-1) / (2 * sigma ** 2)
    got = GaussianLikelihood(sigma, sn, out_act, "sample").log_lik_pairs(x, g, noise=xi[0])
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_pair_mode_blocks_do_not_change_the_result(monkeypatch):
    """The cache-sized blocks of s-slices are an implementation detail."""
    import kaem.kernels.pair_likelihood as L

    rng = np.random.default_rng(7)
    x, g, xi = rng.random((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((3, 5, 4))
    dll = rng.standard_normal((3, 5))
    lik = GaussianLikelihood(0.1, 0.2, "sigmoid", "pair")
    ll, dg = lik.log_lik_pairs(x, g, noise=xi), lik.backward_pairs(dll)
    monkeypatch.setattr(L, "BLOCK_ELEMENTS", 12 * 2)  # two s-slices per block: 3 blocks
    lik2 = GaussianLikelihood(0.1, 0.2, "sigmoid", "pair")
    np.testing.assert_allclose(lik2.log_lik_pairs(x, g, noise=xi), ll, rtol=1e-14)
    np.testing.assert_allclose(lik2.backward_pairs(dll), dg, rtol=1e-14)


# ---- gradients ---------------------------------------------------------------------------

def _model(be, sharing, out_act="sigmoid", seed=0):
    cfg = tiny_config(f"GeneratorModel.output_activation={out_act}", f"GeneratorModel.noise_sharing={sharing}")
    m = KAEM(cfg, (1, 2, 3), be, seed=seed)
    randomise(m, be.rng(seed + 1))
    return m


@pytest.mark.parametrize("out_act", ["sigmoid", "tanh", "none"])
@pytest.mark.parametrize("sharing", MODES)
def test_pairs_gradient_wrt_g(be64, sharing, out_act):
    """Σ R⊙ll w.r.t. the pre-activations g (S, D): both backward forms."""
    rng = be64.rng(8)
    B, S, D = 3, 4, 5
    lik = GaussianLikelihood(0.3, 0.2, out_act, sharing)
    x, g, R = rng.random((B, D)), rng.standard_normal((S, D)), rng.standard_normal((B, S))
    noise = rng.standard_normal((B, S, D) if sharing == "pair" else (S, D))

    def loss():
        return (R * lik.log_lik_pairs(x, g, noise=noise)).sum()

    loss()
    check_grad(loss, g, lik.backward_pairs(R), name=f"{sharing} g")


@pytest.mark.parametrize("sharing", MODES)
def test_rows_gradient_wrt_z(be64, sharing):
    """Paired rows (Langevin chains), 2 chains per datum sharing ξ in ``sample`` mode."""
    m = _model(be64, sharing)
    rng = be64.rng(9)
    B = 3
    x, z = rng.random((B, m.D)), m.sample_prior(2 * B, rng)
    xr, r = np.tile(x, (2, 1)), rng.standard_normal(2 * B)
    noise = rng.standard_normal((2 * B if sharing == "pair" else 2, m.D))

    def loss():
        g = m.generator.forward(m.prior.to_input(z))
        return (r * m.lik.log_lik_rows(xr, g, noise=noise, batch=B)).sum()

    loss()
    dh = m.generator.backward(m.lik.backward_rows(r))
    check_grad(loss, z, m.prior.input_grad(dh), name="z")


def test_rows_sample_mode_shares_per_group(be64):
    lik = GaussianLikelihood(0.1, 0.3, "sigmoid", "sample")
    rng = be64.rng(10)
    g = rng.standard_normal((6, 4))
    xi = rng.standard_normal((2, 4))
    x = rng.random((6, 4))
    ll = lik.log_lik_rows(x, g, noise=xi, batch=3)
    y = apply_output_activation("sigmoid", g + 0.3 * np.repeat(xi, 3, axis=0))
    np.testing.assert_allclose(ll, -((x - y) ** 2).sum(1) / 0.02, rtol=1e-12)
    with pytest.raises(ValueError, match="groups"):
        lik.log_lik_rows(x[:5], g[:5], rng=rng, batch=3)


def _check_generator_params(m, loss):
    """The generator's parameters: the only ones the noise reaches (the prior's gradients do
    not depend on the sharing mode and are checked by test_importance / test_langevin_kaem)."""
    loss()
    grads = {k: v.copy() for k, v in m.gradients().items()}
    for name, p in m.parameters().items():
        if name.startswith("gen."):
            check_grad(loss, p, grads[name], name=name)


def test_is_loss_gradient_with_sample_sharing(be64):
    m = _model(be64, "sample")
    rng = be64.rng(11)
    B, S = 4, 7
    x, z, z_cd = rng.random((B, m.D)), m.sample_prior(S, rng), m.sample_prior(5, rng)
    noise = rng.standard_normal((S, m.D))
    W = rng.dirichlet(np.ones(S), size=B)
    _check_generator_params(m, lambda: is_loss_and_grad(m, x, z, lambda ll: W, z_cd=z_cd, noise=noise)[0])


def test_langevin_and_thermo_loss_gradients_with_sample_sharing(be64):
    m = _model(be64, "sample")
    rng = be64.rng(12)
    B = 3
    x, z = rng.random((B, m.D)), m.sample_prior(2 * B, rng)
    noise = rng.standard_normal((2, m.D))
    _check_generator_params(m, lambda: langevin_loss_and_grad(m, x, z, exact_logZ=True, noise=noise)[0])
    temps = temperature_ladder(2, 2.0)
    zt = m.sample_prior(3 * B, rng).reshape(3, B, *m.prior.latent_shape)
    noise = rng.standard_normal((3, 1, m.D))
    _check_generator_params(m, lambda: thermo_loss_and_grad(m, x, zt, temps, "trapezoid", z_cd=zt[0],
                                                      noise=noise)[0])


def test_unknown_noise_sharing_lists_the_valid_ones():
    with pytest.raises(ValueError, match="pair, sample"):
        GaussianLikelihood(0.1, 0.1, "sigmoid", "datum")
