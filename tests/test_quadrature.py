"""The learnable-Gaussian π0 and the trapezium quadrature (kaem/priors/pi0.py,
kaem/priors/quadrature.py) on the univariate prior: densities against scipy.stats,
finite-difference checks through log p̃ and log Z, the trapezium rule against an independent
trapezoid sum on the same nodes, its convergence order, and its inverse-transform samples
(KS) against the piecewise-linear CDF it defines. The mixture's are in test_mixture.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from conftest import randomise_kan, tiny_config
from gradcheck import away_from, check_grad, check_grads, rel_error
from kaem.backend import get_backend
from kaem.nn.kan import KANSpec
from kaem.model import KAEM
from kaem.priors import UnivariatePrior
from kaem.priors.pi0 import PI0, BaseDensity, sum_to_shape

BE = get_backend("cpu", "float64")


def make_prior(pi0: str = "learnable_gaussian", basis: str = "RBF", P: int = 2, Q: int = 3, seed: int = 0,
               quadrature: str = "gausslegendre", eps: float = 1e-4, n_nodes: int = 100) -> UnivariatePrior:
    spec = KANSpec(basis=basis, grid_size=5, grid_range=(-1.2, 1.2))
    prior = UnivariatePrior(BE, P, Q, spec, BE.rng(seed), pi0=pi0, n_nodes=n_nodes, eps=eps, quadrature=quadrature)
    randomise_kan(prior.params, 900 + seed)
    r, p = np.random.default_rng(seed), prior.params
    if pi0 == "learnable_gaussian":
        p["pi0_mu"][...] = r.uniform(-0.4, 0.4, P)
        p["pi0_log_sigma"][...] = r.uniform(-0.5, 0.3, P)
    return prior


def energy_on(prior: UnivariatePrior, t: np.ndarray) -> np.ndarray:
    """f_{q,p}(t[m, p]) (M, Q, P); t (M,) is shared by every p, t (M, P) is per p."""
    t = np.broadcast_to(t[:, None] if t.ndim == 1 else t, (t.shape[0], prior.P))
    return prior.layer.forward_pointwise(np.ascontiguousarray(t[:, None, :]), cache=False)


# ---- learnable_gaussian ----------------------------------------------------------------------

def test_learnable_gaussian_is_registered_with_its_parameters():
    assert "learnable_gaussian" in PI0
    prior = UnivariatePrior(BE, 3, 2, KANSpec(grid_size=5, grid_range=(-2.0, 1.5)), BE.rng(0), pi0="learnable_gaussian")
    np.testing.assert_array_equal(prior.params["pi0_mu"], np.zeros(3))  # N(0, 1) at the start
    np.testing.assert_array_equal(prior.params["pi0_log_sigma"], np.zeros(3))
    np.testing.assert_array_equal(prior.buffers["domain"], np.tile([-2.0, 1.5], (3, 1)))  # the grid_range
    np.testing.assert_array_equal(sum_to_shape(np.ones((4, 3, 2)), (3, 1)), np.full((3, 1), 8.0))
    assert BaseDensity("gaussian", BE).params == {}


def test_learnable_gaussian_density_is_a_gaussian_not_its_reciprocal():
    """log π0 against scipy.stats.norm(μ_p, σ_p), and log p̃ = Σ f + log(π0 + ε) with it."""
    prior = make_prior(seed=1)
    mu, sig = prior.params["pi0_mu"], np.exp(prior.params["pi0_log_sigma"])
    z = np.random.default_rng(2).uniform(-1.2, 1.2, (6, prior.Q, prior.P))
    lp, _ = prior.pi0.log_pdf(z)
    np.testing.assert_allclose(lp, stats.norm.logpdf(z, mu, sig), rtol=1e-12)
    want = (prior.layer.forward_pointwise(z, cache=False) + np.log(stats.norm.pdf(z, mu, sig) + 1e-4)).sum(axis=(1, 2))
    np.testing.assert_allclose(prior.log_unnorm(z), want, rtol=1e-12)


def test_learnable_gaussian_log_prob_integrates_to_one():
    prior = make_prior(P=1, Q=1, seed=3, eps=0.0)
    x, w = np.polynomial.legendre.leggauss(400)
    x, w = 1.2 * x, 1.2 * w
    assert abs(float(w @ np.exp(prior.log_prob(x[:, None, None]))) - 1.0) < 1e-9


@pytest.mark.parametrize("basis", ["RBF", "FFT", "Cheby"])
def test_learnable_gaussian_gradients(basis):
    """Central differences of c·log p̃(z) (z and every parameter, μ and log σ included) and
    of R·log Z (the gradient through the normaliser)."""
    prior = make_prior(basis=basis, seed=4)
    grid = prior.layer.buffers["grid"]
    z = away_from(np.random.default_rng(5), (5, prior.Q, prior.P), -1.2, 1.2, [] if grid is None else np.unique(grid))
    c = np.random.default_rng(6).normal(size=5)
    prior.zero_grad()
    prior.log_unnorm(z)
    dz = prior.log_unnorm_backward(c)
    check_grad(lambda: float(c @ prior.log_unnorm(z, cache=False)), z, dz, name="dz")
    check_grads(lambda: float(c @ prior.log_unnorm(z, cache=False)), prior.params, prior.grads)
    R = np.random.default_rng(7).normal(size=(prior.Q, prior.P))
    prior.zero_grad()
    prior.log_Z()
    prior.log_Z_backward(R)
    assert np.abs(prior.grads["pi0_mu"]).max() > 1e-3
    check_grads(lambda: float((R * prior.log_Z(cache=False)).sum()), prior.params, prior.grads, name="logZ")


def test_learnable_gaussian_trains_in_a_model():
    """A KAEM with the learnable π0: IS steps with exact log Z move μ and σ."""
    from kaem.objectives.importance import is_step
    from kaem.optim import Adam

    m = KAEM(tiny_config("TRAINING.contrastive_divergence_training=false", "TRAINING.importance_sample_size=8",
                         pi0="learnable_gaussian"), (1, 2, 3), BE, seed=0)
    assert m.parameters()["prior.pi0_mu"].shape == (3,)
    opt = Adam(m.parameters(), lr=1e-2)
    rng = BE.rng(1)
    x = rng.random((4, m.D))
    for _ in range(3):
        is_step(m, x, rng)
        opt.step(m.gradients())
    assert np.abs(m.parameters()["prior.pi0_mu"]).max() > 0 and np.abs(m.parameters()["prior.pi0_log_sigma"]).max() > 0


# ---- trapezium -------------------------------------------------------------------------------

@pytest.mark.parametrize("pi0,domain", [("gaussian", (-1.2, 1.2)), ("lognormal", (0.0, 4.0)), ("uniform", (0.0, 1.0))])
def test_trapezium_log_Z_is_the_trapezoid_sum_on_the_grid(pi0, domain):
    """Nodes: the interval's ends and the RBF grid points inside it; Z = Σ ½(g_{k−1}+g_k)Δ_k,
    computed here with numpy.trapezoid and scipy's π0."""
    prior = make_prior(pi0, seed=8, quadrature="trapezium")
    lo, hi = domain
    grid = np.linspace(-1.2, 1.2, 6)
    t = np.concatenate([[lo], grid[(grid > lo) & (grid < hi)], [hi]])
    nodes, _ = prior.quadrature()
    np.testing.assert_allclose(np.unique(nodes[:, 0]), t, rtol=0, atol=1e-15)
    p0 = {"gaussian": stats.norm.pdf(t), "lognormal": stats.lognorm.pdf(t, s=1.0),
          "uniform": np.ones_like(t)}[pi0]
    Z = np.trapezoid(np.exp(energy_on(prior, t)) * p0[:, None, None], t, axis=0)
    np.testing.assert_allclose(np.exp(prior.log_Z()), Z, rtol=1e-12)


def test_trapezium_without_a_grid_uses_evenly_spaced_points():
    prior = make_prior("gaussian", basis="FFT", seed=9, quadrature="trapezium")
    nodes, w = prior.quadrature()
    np.testing.assert_allclose(nodes[:, 0], np.linspace(-1.2, 1.2, 6), rtol=1e-14)
    np.testing.assert_allclose(w.sum(axis=0), 2.4, rtol=1e-14)


def test_trapezium_is_second_order():
    """Splitting every cell in two (``refine``) shrinks the error of log Z about 4-fold; the
    reference value is 400-node Gauss–Legendre."""
    prior = make_prior("gaussian", seed=10, quadrature="trapezium")
    exact = make_prior("gaussian", seed=10, n_nodes=400).log_Z(cache=False)
    errs = [np.abs(prior.log_Z(cache=False, refine=r) - exact).max() for r in (4, 8, 16)]
    assert 3.5 < errs[0] / errs[1] < 4.5 and 3.5 < errs[1] / errs[2] < 4.5, errs
    assert prior.quadrature_error() > 1e-3  # the bare 6-point grid is coarse, and says so


def test_trapezium_log_Z_gradient():
    prior = make_prior("learnable_gaussian", basis="B-spline", seed=11, quadrature="trapezium")
    R = np.random.default_rng(12).normal(size=(prior.Q, prior.P))
    prior.zero_grad()
    prior.log_Z()
    prior.log_Z_backward(R)
    check_grads(lambda: float((R * prior.log_Z(cache=False)).sum()), prior.params, prior.grads)


def test_trapezium_samples_follow_the_piecewise_linear_cdf():
    """Inverse transform with the trapezium rule draws from the CDF that is linear between the
    nodes with the trapezoid masses (built here independently): KS per (q, p); the same
    test rejects the Gauss–Legendre sampler's distribution, which differs by O(cell mass)."""
    prior = make_prior("gaussian", seed=13, quadrature="trapezium")
    t = np.linspace(-1.2, 1.2, 6)
    g = np.exp(energy_on(prior, t)) * stats.norm.pdf(t)[:, None, None]
    cdf = np.concatenate([np.zeros((1, prior.Q, prior.P)), np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(t)[:, None, None], 0)])
    cdf /= cdf[-1]
    n = 20_000
    z = prior.sample(n, BE.rng(14))
    assert z.min() >= -1.2 and z.max() <= 1.2
    level = 1e-3 / (prior.Q * prior.P)
    for q in range(prior.Q):
        for p in range(prior.P):
            assert stats.kstest(z[:, q, p], lambda s: np.interp(s, t, cdf[:, q, p])).pvalue > level, (q, p)
    zg = make_prior("gaussian", seed=13).sample(n, BE.rng(14))
    assert min(stats.kstest(zg[:, q, p], lambda s: np.interp(s, t, cdf[:, q, p])).pvalue
               for q in range(prior.Q) for p in range(prior.P)) < 1e-6
    assert rel_error(prior.its_tables()[0][:, -1], np.ones(prior.Q * prior.P)) < 1e-15
    assert math.isfinite(prior.quadrature_error())
