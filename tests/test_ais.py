"""Annealed importance sampling (kaem/evaluation/anneal.py, paths.py, ais.py).

Validation against exact evidences, with fixed seeds and tolerances from standard errors:
the linear-Gaussian model (closed form), and KAEMs with a 2-dimensional latent whose
log p(x) comes from brute-force quadrature (tests/ais_exact.py). The standard error of an
estimate's error is that of the mean over data of (estimate_b − exact_b). Gradients of the
paths are checked by central differences in float64.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import ais_exact
from ais_exact import deep_2d, linear_gaussian, mean_se, mixture_2d, univariate_2d
from conftest import tiny_config
from gradcheck import check_grad
from kaem.evaluation.ais import DEFAULT_REFRESH, DEFAULT_RESAMPLE, ais_loglik, ais_weights
from kaem.evaluation.anneal import anneal, schedule
from kaem.evaluation.moves import refresh_moves
from kaem.evaluation.bdmc import simulate
from kaem.evaluation.paths import DeepJointPath, DeepPriorPath, ITSLatent, ITSPath, MixtureDensityPath
from kaem.model import KAEM
from kaem.numerics import rowwise_interp
from kaem.samplers.target import evaluate


# ---- schedules ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sigmoid", "geometric"])
@pytest.mark.parametrize("K", [1, 2, 7, 300])
def test_schedules_rise_from_0_to_1(kind, K):
    t = schedule(K, kind)
    assert t.shape == (K + 1,) and t.dtype == np.float64
    assert t[0] == 0.0 and t[-1] == 1.0
    assert np.all(np.diff(t) > 0)


def test_schedule_shapes():
    sig, geo = schedule(100, "sigmoid"), schedule(100, "geometric", t_min=1e-4)
    assert sig[50] == pytest.approx(0.5)  # symmetric about the middle
    assert geo[1] == pytest.approx(1e-4) and geo[2] / geo[1] == pytest.approx(geo[-1] / geo[-2])


@pytest.mark.parametrize("bad", [dict(K=0), dict(K=2.5), dict(K=True), dict(K=10, kind="linear"),
                                 dict(K=10, kind="geometric", t_min=1.5)])
def test_schedule_rejects_bad_settings(bad):
    with pytest.raises(ValueError, match="K =|schedule"):
        schedule(**bad)


# ---- linear-Gaussian model: exact evidence ---------------------------------------------------
@pytest.mark.parametrize("refresh, resample_ess", [(0, 0.0), (2, 0.0), (2, 0.5)])
def test_linear_gaussian_ais_matches_exact_evidence(refresh, resample_ess):
    B, C = 60, 32
    tg, path, _ = linear_gaussian(B, seed=0)
    r = ais_weights(path, 800, C, np.random.default_rng(1), n_leapfrog=1, refresh=refresh, resample_ess=resample_ess)
    err, se = mean_se(r["logp"] - tg.log_evidence())
    assert abs(err) <= 2 * se, (err, se)
    assert abs(err) <= 0.05, (err, se)
    assert 1.0 <= r["ess"].min() and r["ess"].max() <= C + 1e-9
    # importance sampling from the prior (K = 1) on the same data is far off: the test has teeth
    r1 = ais_weights(path, 1, C, np.random.default_rng(1), n_leapfrog=1)
    assert (r1["logp"] - tg.log_evidence()).mean() < -10 * se


def _tempered_draws(t: float, n: int, seed: int) -> tuple:
    """n exact draws from p_t(z | x) of the one-datum linear-Gaussian model, d = 3."""
    tg, path, _ = linear_gaussian(1, seed=2)
    mean, cov = tg.posterior(t)
    v = mean[0] + np.random.default_rng(seed).standard_normal((n, 3)) @ np.linalg.cholesky(cov).T
    return path, v, mean[0], cov


def test_refresh_moves_leave_the_tempered_posterior_invariant():
    """Exact draws from p_t stay exact draws after refresh moves: the mean and variance of
    every coordinate within 4 standard errors of p_t's (N = 20 000). The same moves run at
    t = 1 instead do move the draws away (the check can see a kernel that is not p_t's)."""
    t, N = 0.3, 20_000
    path, v, mean, cov = _tempered_draws(t, N, seed=0)
    var = np.diag(cov)
    se_mean, se_var = np.sqrt(var / N), var * np.sqrt(2.0 / (N - 1))
    v2, ev2, acc = refresh_moves(path, v, evaluate(path, v), np.float64(t), np.random.default_rng(1), 20)
    assert np.all(np.abs(v2.mean(axis=0) - mean) <= 4 * se_mean), (v2.mean(axis=0) - mean) / se_mean
    assert np.all(np.abs(v2.var(axis=0) - var) <= 4 * se_var), (v2.var(axis=0) - var) / se_var
    assert (v2 != v).any(axis=1).mean() > 0.3 and 0.1 < acc.mean() < 1.0  # they do move
    np.testing.assert_allclose(ev2.ll, path.log_lik(v2)[0], rtol=1e-12)
    np.testing.assert_allclose(ev2.gll, path.log_lik(v2)[1], rtol=1e-12)
    wrong, _, _ = refresh_moves(path, v, evaluate(path, v), np.float64(1.0), np.random.default_rng(1), 20)
    assert np.abs(wrong.mean(axis=0) - mean).max() > 10 * se_mean.max() or \
        np.abs(wrong.var(axis=0) - var).max() > 10 * se_var.max()


@pytest.mark.parametrize("make", [univariate_2d, mixture_2d], ids=["univariate", "mixture"])
def test_refresh_moves_keep_the_joint_law_of_a_kaem(be64, make):
    """(ε*, x) drawn from the model's joint: ε* is an exact posterior draw for its x, so a
    kernel that leaves every posterior p_1(ε | x) invariant keeps ε ~ N(0, I) marginally.
    After 20 refresh moves at t = 1 (N = 20 000 pairs, nearly all moved), every coordinate's
    mean and variance stay within 4 standard errors of N(0, 1)'s."""
    N = 20_000
    m = make(be64)
    with m.evaluating():
        lat = ITSLatent(m.prior)
        x, eps = simulate(m, N, np.random.default_rng(0), lat)
        path = ITSPath(m, x, lat)
        v, _, acc = refresh_moves(path, eps, evaluate(path, eps), np.float64(1.0), np.random.default_rng(1), 20)
    f, f0 = v.reshape(N, -1), eps.reshape(N, -1)
    assert (f != f0).any(axis=1).mean() > 0.9 and acc.mean() > 0.1
    assert np.all(np.abs(f.mean(axis=0)) <= 4 * math.sqrt(1.0 / N)), f.mean(axis=0)
    assert np.all(np.abs(f.var(axis=0) - 1.0) <= 4 * math.sqrt(2.0 / N)), f.var(axis=0)


def test_refresh_moves_need_a_normal_base(be64):
    m = mixture_2d(be64)
    x = simulate(m, 2, np.random.default_rng(0))[0]
    path = MixtureDensityPath(m, x)
    v, w0 = path.sample_base(4, np.random.default_rng(1))
    with pytest.raises(ValueError, match="refresh = 1.*standard-normal base"):
        anneal(path, v, schedule(3), 2, np.random.default_rng(2), refresh=1, log_w0=w0)


# ---- the latent maps and the paths' gradients ------------------------------------------------
@pytest.mark.parametrize("shared", [True, False])
def test_its_map_is_the_priors_inverse_transform(be64, shared):
    """z = T(Φ(ε)) is what ``prior.sample`` computes from u = Φ(ε) (its tables, row by row)."""
    m = univariate_2d(be64)
    m.prior.shared_uniform = shared
    lat = ITSLatent(m.prior)
    eps = np.random.default_rng(0).standard_normal((50,) + lat.eps_shape)
    from scipy.special import ndtr
    u = np.broadcast_to(ndtr(eps), (50, 2, 2)).transpose(1, 2, 0).reshape(4, 50)
    cdf, edges = m.prior.its_tables()
    expect = rowwise_interp(u, cdf, edges).reshape(2, 2, 50).transpose(2, 0, 1)
    np.testing.assert_allclose(lat.forward(eps)[0], expect, rtol=0, atol=1e-12)


def test_mixture_its_table_is_the_samplers_law(be64):
    """The mixture's sampler (component, then inverse transform) draws z_q with the CDF
    Σ_p α_{q,p} F_{q,p} that ITSLatent inverts: Kolmogorov–Smirnov distance below the 99.9%
    critical value 1.95/√n."""
    m = mixture_2d(be64)
    lat = ITSLatent(m.prior)
    n = 20000
    z = m.prior.sample(n, np.random.default_rng(0))
    for q in range(2):
        zs = np.sort(z[:, q])
        F = np.interp(zs, lat.edges[q], lat.cdf[q])
        emp_hi, emp_lo = np.arange(1, n + 1) / n, np.arange(n) / n
        ks = max(np.abs(F - emp_hi).max(), np.abs(F - emp_lo).max())
        assert ks < 1.95 / math.sqrt(n), (q, ks)


def _check_path_grads(path, v, tol=1e-6):
    for name, fn in (("log_prior", path.log_prior), ("log_lik", path.log_lik)):
        check_grad(lambda: fn(v)[0].sum(), v, fn(v)[1], tol=tol, name=name)


@pytest.mark.parametrize("kind", ["univariate-shared", "univariate", "mixture"])
def test_its_path_gradients(be64, kind):
    m = mixture_2d(be64) if kind == "mixture" else univariate_2d(be64)
    m.prior.shared_uniform = kind == "univariate-shared"
    x = np.random.default_rng(1).random((3, 12))
    path = ITSPath(m, x)
    eps = np.random.default_rng(2).standard_normal((6,) + path.latent_shape)
    with m.evaluating():
        _check_path_grads(path, eps)
        np.testing.assert_allclose(path.log_lik_value(eps), path.log_lik(eps)[0], rtol=1e-12)


def test_mixture_density_path_gradient_and_sampler_density(be64):
    m = mixture_2d(be64)
    x = np.random.default_rng(1).random((3, 12))
    path = MixtureDensityPath(m, x)
    z = np.random.default_rng(2).uniform(-1.0, 1.0, (6, 2))
    with m.evaluating():
        _check_path_grads(path, z)
        # log π is the mixture's normalised density (no ε) and −inf outside the domain
        lp = path.log_prior(z)[0]
        assert np.all(np.abs(lp - m.prior.log_prob(z)) < 5e-3)
        assert path.log_prior(np.array([[5.0, 0.0]]))[0][0] == -np.inf
        # q is the derivative of the sampler's piecewise-linear CDF Σ_p α F_p
        h = 1e-7
        lat = path.map
        dF = [(np.interp(z[:, q] + h, lat.edges[q], lat.cdf[q]) - np.interp(z[:, q] - h, lat.edges[q], lat.cdf[q]))
              / (2 * h) for q in range(2)]
        np.testing.assert_allclose(path.log_sampler_density(z), np.log(dF[0] * dF[1]), rtol=1e-6)


def test_deep_path_gradients(be64):
    m = deep_2d(be64)
    x = np.random.default_rng(1).random((3, 12))
    z = np.random.default_rng(2).standard_normal((6, 2))
    with m.evaluating():
        for path in (DeepJointPath(m, x), DeepPriorPath(m.prior)):
            _check_path_grads(path, z)
            np.testing.assert_allclose(path.log_lik_value(z), path.log_lik(z)[0], rtol=1e-12)


# ---- KAEMs with a 2-dimensional latent: brute-force quadrature -------------------------------
# 64 chains per image: with 16 the per-image log-mean-exp errors of the mixture's multimodal
# posteriors are skewed (a lower tail of −0.28 nat against a spread of 0.09), which makes the
# normal 2-standard-error comparison miscalibrated; at 64 their distribution is close to normal.
CHAINS_2D = 64
def test_univariate_2d_ais_matches_quadrature(be64):
    m = univariate_2d(be64)
    with m.evaluating():
        lat = ITSLatent(m.prior)
        x, _ = simulate(m, 30, np.random.default_rng(4), lat)
        exact = ais_exact.its_exact(m, x, lat)
    r = ais_loglik(m, x, rng=np.random.default_rng(5), temps=100, chains=CHAINS_2D, n_leapfrog=1)
    err, se = mean_se(np.asarray(r["loglik_per_image"]) - exact)
    assert abs(err) <= 2 * se, (err, se)
    assert r["loglik_nats"] == pytest.approx(float(np.mean(r["loglik_per_image"])))


@pytest.mark.parametrize("mixture", ["its", "density"])
def test_mixture_2d_ais_matches_quadrature(be64, mixture):
    m = mixture_2d(be64)
    with m.evaluating():
        lat = ITSLatent(m.prior)
        x, _ = simulate(m, 30, np.random.default_rng(4), lat)
        exact = (ais_exact.its_exact(m, x, lat) if mixture == "its"
                 else ais_exact.mixture_density_exact(m, x, MixtureDensityPath(m, x, lat)))
    r = ais_loglik(m, x, rng=np.random.default_rng(5), temps=100, chains=CHAINS_2D, n_leapfrog=1, mixture=mixture)
    err, se = mean_se(np.asarray(r["loglik_per_image"]) - exact)
    assert abs(err) <= 2 * se, (err, se)


def test_deep_prior_2d_ais_matches_quadrature(be64):
    """log p(x) = AIS(π0 → π0 e^f p(x|z)) − AIS(π0 → π0 e^f); its error's standard error
    combines the images' and log Ẑ's."""
    m = deep_2d(be64)
    r0 = np.random.default_rng(4)
    with m.evaluating():
        x = m.decode(r0.standard_normal((30, 2))) + 0.1 * r0.standard_normal((30, 12))
        exact = ais_exact.deep_exact(m, x)
    r = ais_loglik(m, x, rng=np.random.default_rng(5), temps=100, chains=CHAINS_2D, n_leapfrog=1, logZ_chains=2000)
    err, se = mean_se(np.asarray(r["loglik_per_image"]) - exact)
    se = math.hypot(se, r["logZ_se"])
    assert abs(err) <= 2 * se, (err, se)
    assert r["loglik_se"] >= r["loglik_se_images"] and r["logZ_ess"] > 100


# ---- the report and its settings -------------------------------------------------------------
def test_ais_loglik_report_and_image_groups(be64):
    m = univariate_2d(be64)
    x = simulate(m, 7, np.random.default_rng(0))[0]
    r = ais_loglik(m, x, rng=np.random.default_rng(1), temps=5, chains=4, max_chains=8, n_leapfrog=2)
    for k in ("loglik_nats", "loglik_se", "loglik_mc_se", "ess", "ess_min", "acceptance", "bits_per_dim"):
        assert np.isfinite(r[k]), k
    assert len(r["loglik_per_image"]) == len(r["ess_per_image"]) == r["n_images"] == 7  # groups of 2 images
    assert 1.0 <= r["ess_min"] <= r["ess"] <= 4.0 + 1e-9
    assert r["estimator"] == "ais" and r["temps"] == 5 and r["chains"] == 4
    assert r["refresh"] == DEFAULT_REFRESH and r["resample_ess"] == DEFAULT_RESAMPLE


@pytest.mark.parametrize("bad, match", [(dict(temps=0), "temps"), (dict(chains=-1), "chains"),
                                        (dict(schedule="cosine"), "schedule"),
                                        (dict(n_leapfrog=0), "n_leapfrog"), (dict(mixture="zspace"), "mixture"),
                                        (dict(refresh=-1), "refresh"), (dict(resample_ess=1.5), "resample_ess")])
def test_ais_loglik_rejects_bad_settings(be64, bad, match):
    m = univariate_2d(be64)
    with pytest.raises(ValueError, match=match):
        ais_loglik(m, np.zeros((2, 12)), rng=np.random.default_rng(0), **bad)


@pytest.mark.parametrize("prior", ["univariate", "mixture-its", "mixture-density", "deep"])
def test_annealing_loop_reads_nothing_back(prior):
    """On a simulated device the number of device->host reads does not grow with K: none
    happen inside the annealing loop."""
    from syncbackend import counting, counting_backend

    be = counting_backend("float64")
    widths = {"deep": ["EbmModel.layer_widths=2,4,1"],
              "univariate": ["EbmModel.layer_widths=2,2"]}.get(prior, ["EbmModel.layer_widths=3,2",
                                                                         "MixtureModel.use_mixture_prior=true"])
    m = KAEM(tiny_config(*widths, "GeneratorModel.widths=2,5"), (1, 3, 4), be, seed=0)
    x = be.asarray(np.random.default_rng(0).random((3, 12)))
    mixture = "density" if prior == "mixture-density" else "its"
    counts = []
    for K in (3, 9):
        with counting() as c:
            ais_loglik(m, x, rng=be.rng(1), temps=K, chains=2, n_leapfrog=2, mixture=mixture, logZ_chains=4)
        counts.append(c.n)
    assert counts[0] == counts[1], counts
