"""Tests for kaem/prior.py: the univariate energy-based prior (method §1.1 and §3).

Gradients of log p̃(z) and log Z are checked against central differences (tests/gradcheck.py)
for every π0 and every registered basis; the quadrature is checked against closed forms and
scipy.integrate.quad; inverse-transform samples are checked against each prior's CDF built
INDEPENDENTLY of the library's quadrature (f evaluated on 1e5 points, trapezoid rule).
float64, fixed seeds, random non-trivial parameters throughout.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from conftest import randomise_kan
from kaem.backend import get_backend
from kaem.nn.bases import BASES
from kaem.nn.kan import KANSpec
from kaem.priors import UnivariatePrior
from kaem.priors.pi0 import PI0

try:
    from gradcheck import away_from, check_grad, rel_error
except ImportError:  # tests/ imported as a package
    from tests.gradcheck import away_from, check_grad, rel_error

BE = get_backend("cpu", "float64")
G = 5
GRID_RANGE = (-1.2, 1.2)
TOL = 1e-6
BASIS_NAMES = sorted(BASES)
DOMAIN = {"ebm": GRID_RANGE, "uniform": (-0.1, 1.1), "gaussian": (-1.2, 1.2), "lognormal": (0.0, 4.0)}


def make_prior(pi0: str, basis: str = "RBF", P: int = 2, Q: int = 3, seed: int = 0,
               shared_uniform: bool = True, n_nodes: int = 100, eps: float = 1e-4,
               act: str = "silu", grid_range=GRID_RANGE) -> UnivariatePrior:
    """A prior whose energy f_{q,p} is random and O(1) (far from the near-zero init)."""
    spec = KANSpec(basis=basis, grid_size=G, degree=3, activation=act, grid_range=grid_range)
    prior = UnivariatePrior(BE, P, Q, spec, BE.rng(seed), pi0=pi0, n_nodes=n_nodes, eps=eps,
                            shared_uniform=shared_uniform)
    randomise_kan(prior.params, 500 + seed)
    return prior


def zero_energy(prior: UnivariatePrior) -> None:
    """f ≡ 0: the one place where zero parameters are the point."""
    for k in ("coef", "w_base", "w_sp"):
        prior.params[k][...] = 0.0


def latent_inputs(prior: UnivariatePrior, n: int, seed: int) -> np.ndarray:
    """z (n, Q, P) inside the π0 support (lognormal > 0, uniform inside (0,1) away from
    the jumps), ≥ 0.02 from every grid knot (B-splines are only C² there) and from 0."""
    lo, hi = {"ebm": (-1.4, 1.4), "uniform": (0.02, 0.98), "gaussian": (-1.4, 1.4),
              "lognormal": (0.05, 4.0)}[prior.pi0_name]
    grid = prior.layer.buffers["grid"]
    bad = [0.0] + ([] if grid is None else list(np.unique(grid)))
    return away_from(np.random.default_rng(seed), (n, prior.Q, prior.P), lo, hi, bad)


def energy_on(prior: UnivariatePrior, t: np.ndarray) -> np.ndarray:
    """f_{q,p}(t_m) for every (q,p) through forward_pointwise with shared inputs: (M, Q, P)."""
    z = np.ascontiguousarray(np.broadcast_to(t[:, None, None], (t.size, 1, prior.P)))
    return prior.layer.forward_pointwise(z, cache=False)


def pi0_density(name: str, t: np.ndarray) -> np.ndarray:
    """π0 from scipy.stats, independent of kaem.prior."""
    if name == "ebm":
        return np.ones_like(t)
    if name == "uniform":
        return ((t >= 0) & (t <= 1)).astype(float)
    if name == "gaussian":
        return stats.norm.pdf(t)
    return stats.lognorm.pdf(t, s=1.0)


def reference_cdf(prior: UnivariatePrior, m: int = 100_001) -> tuple[np.ndarray, np.ndarray]:
    """CDF of every π_{q,p} on m points of the domain: f via forward_pointwise, trapezoid
    rule, cumulative, normalised. Returns (t (m,), cdf (m, Q, P))."""
    lo, hi = DOMAIN[prior.pi0_name] if prior.pi0_name != "ebm" else prior.layer.spec.grid_range
    t = np.linspace(lo, hi, m)
    g = np.exp(energy_on(prior, t)) * pi0_density(prior.pi0_name, t)[:, None, None]
    cell = 0.5 * (g[1:] + g[:-1]) * np.diff(t)[:, None, None]
    cdf = np.concatenate([np.zeros((1,) + g.shape[1:]), np.cumsum(cell, axis=0)])
    return t, cdf / cdf[-1]


# ---- π0 and the unnormalised log density --------------------------------------------------

def test_pi0_registry_and_domains() -> None:
    assert set(PI0) >= {"ebm", "uniform", "gaussian", "lognormal"}
    for name, dom in DOMAIN.items():
        prior = make_prior(name, P=3, Q=2)
        np.testing.assert_array_equal(prior.buffers["domain"], np.tile(dom, (3, 1)))
    prior = make_prior("ebm", grid_range=(-2.0, 3.0))
    np.testing.assert_array_equal(prior.buffers["domain"][0], [-2.0, 3.0])
    with pytest.raises(ValueError):
        make_prior("no-such-pi0")


@pytest.mark.parametrize("pi0", ["ebm", "uniform", "gaussian", "lognormal"])
def test_log_unnorm_matches_formula(pi0: str) -> None:
    """log p̃(z) = Σ_{q,p} f_{q,p}(z_{q,p}) + log(π0(z_{q,p}) + ε), π0 from scipy.stats."""
    prior = make_prior(pi0, eps=1e-4)
    z = latent_inputs(prior, 6, seed=1)
    f = prior.layer.forward_pointwise(z, cache=False)
    want = (f + np.log(pi0_density(pi0, z) + 1e-4)).sum(axis=(1, 2))
    assert rel_error(prior.log_unnorm(z), want) < 1e-12
    # the (q, p) pairing is explicit: f[n, q, p] is φ_{p,q} applied to z[n, q, p]
    q, p = 2, 1
    single = np.zeros_like(z)
    single[...] = z[:, q:q + 1, p:p + 1]
    assert rel_error(prior.layer.forward_pointwise(single, cache=False)[:, q, p], f[:, q, p]) < 1e-14


@pytest.mark.parametrize("basis", BASIS_NAMES)
@pytest.mark.parametrize("pi0", ["ebm", "uniform", "gaussian", "lognormal"])
def test_log_unnorm_gradients(pi0: str, basis: str) -> None:
    prior = make_prior(pi0, basis=basis, seed=2)
    z = latent_inputs(prior, 5, seed=3)
    c = np.random.default_rng(4).normal(size=5)  # random dL/dlog p̃

    def loss() -> float:
        return float(c @ prior.log_unnorm(z, cache=False))

    prior.layer.zero_grad()
    prior.log_unnorm(z)
    dz = prior.log_unnorm_backward(c)
    assert dz.shape == z.shape
    check_grad(loss, z, dz, tol=TOL, name=f"{pi0}/{basis} dz")
    for k in prior.params:
        check_grad(loss, prior.params[k], prior.grads[k], tol=TOL, name=f"{pi0}/{basis} {k}")
    # need_dz=False still accumulates the parameter gradients
    before = {k: v.copy() for k, v in prior.grads.items()}
    prior.log_unnorm(z)
    assert prior.log_unnorm_backward(c, need_dz=False) is None
    for k in before:
        np.testing.assert_allclose(prior.grads[k], 2 * before[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("basis", BASIS_NAMES)
@pytest.mark.parametrize("pi0", ["ebm", "uniform", "gaussian", "lognormal"])
def test_log_Z_gradients(pi0: str, basis: str) -> None:
    prior = make_prior(pi0, basis=basis, seed=5)
    R = np.random.default_rng(6).normal(size=(prior.Q, prior.P))

    def loss() -> float:
        return float((R * prior.log_Z(cache=False)).sum())

    prior.layer.zero_grad()
    lz = prior.log_Z()
    assert lz.shape == (prior.Q, prior.P) and np.isfinite(lz).all()
    prior.log_Z_backward(R)
    for k in prior.params:
        check_grad(loss, prior.params[k], prior.grads[k], tol=TOL, name=f"{pi0}/{basis} {k}")


# ---- quadrature accuracy ---------------------------------------------------------------

@pytest.mark.parametrize("pi0, want", [
    ("ebm", 2.4),  # interval length of grid_range
    ("gaussian", stats.norm.cdf(1.2) - stats.norm.cdf(-1.2)),
    ("lognormal", stats.norm.cdf(math.log(4.0))),  # standard lognormal CDF at 4
])
def test_log_Z_zero_energy_closed_form(pi0: str, want: float) -> None:
    prior = make_prior(pi0, n_nodes=100)
    zero_energy(prior)
    Z = np.exp(prior.log_Z())
    np.testing.assert_allclose(Z, want, rtol=1e-8, atol=0)


def test_log_Z_zero_energy_ebm_follows_grid_range() -> None:
    prior = make_prior("ebm", grid_range=(-2.0, 3.0))
    zero_energy(prior)
    np.testing.assert_allclose(np.exp(prior.log_Z()), 5.0, rtol=1e-12)


def test_log_Z_uniform_pi0_zero_energy_is_one() -> None:
    """π0 = U(0,1) with f ≡ 0 has Z = ∫_{-0.1}^{1.1} 1[0≤z≤1] dz = 1 exactly.

    KNOWN FAILURE (library accuracy bug, see report): Gauss–Legendre on [-0.1, 1.1] is
    applied across the jumps of π0 at 0 and 1, so Z is off by ~1e-2 (no spectral
    convergence for a discontinuous integrand); the fix is to integrate over the support
    (split the nodes at the jumps / use [0, 1] as the quadrature interval).
    """
    prior = make_prior("uniform", n_nodes=100)
    zero_energy(prior)
    np.testing.assert_allclose(np.exp(prior.log_Z()), 1.0, rtol=1e-8)


def _quad_Z(prior: UnivariatePrior, q: int, p: int) -> float:
    """∫ exp(f_{q,p}(z)) π0(z) dz by adaptive quadrature, f evaluated through the layer."""
    lo, hi = prior.buffers["domain"][p]

    def integrand(t: float) -> float:
        f = energy_on(prior, np.array([t]))[0, q, p]
        return math.exp(f) * float(pi0_density(prior.pi0_name, np.array([t]))[0])

    val, err = integrate.quad(integrand, lo, hi, epsabs=0.0, epsrel=1e-13, limit=200)
    return val


@pytest.mark.parametrize("basis, tol", [
    ("RBF", 1e-8),  # analytic integrand: Gauss–Legendre converges spectrally
    # cubic B-splines are only C² at the knots, so GL converges algebraically (~5e-8 at 100 nodes)
    ("B-spline", 1e-6),
])
@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "lognormal"])
def test_log_Z_matches_scipy_quad(pi0: str, basis: str, tol: float) -> None:
    prior = make_prior(pi0, basis=basis, P=2, Q=2, seed=7, n_nodes=100)
    Z = np.exp(prior.log_Z())
    want = np.array([[_quad_Z(prior, q, p) for p in range(2)] for q in range(2)])
    assert np.all(np.abs(Z / want - 1) < tol), (Z, want)
    # the energy really is non-trivial: Z differs from the f ≡ 0 value by O(1)
    lo, hi = DOMAIN[pi0]
    Z0 = integrate.quad(lambda t: float(pi0_density(pi0, np.array([t]))[0]), lo, hi)[0]
    assert np.abs(np.log(want / Z0)).max() > 0.1


# ---- normalisation: log_prob integrates to one -------------------------------------------

def _gl(lo: float, hi: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    half = 0.5 * (hi - lo)
    return lo + half * (x + 1), w * half


@pytest.mark.parametrize("QP", [(1, 1), (2, 1), (1, 2)], ids=["Q1P1", "Q2P1", "Q1P2"])
@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "lognormal"])
def test_log_prob_integrates_to_one(pi0: str, QP: tuple) -> None:
    """Σ w exp(log π(z)) over a fine tensor GL grid (300 nodes per coordinate, not the
    prior's 100) is 1. eps = 0 so the density is exactly exp(f)π0/Z."""
    Q, P = QP
    prior = make_prior(pi0, P=P, Q=Q, seed=8, eps=0.0)
    x, w = _gl(*DOMAIN[pi0], 300 if Q * P == 1 else 150)
    grids = np.meshgrid(*([x] * (Q * P)), indexing="ij")
    z = np.stack([g.ravel() for g in grids], axis=-1).reshape(-1, Q, P)
    wt = np.prod(np.meshgrid(*([w] * (Q * P)), indexing="ij"), axis=0).ravel()
    total = float(wt @ np.exp(prior.log_prob(z)))
    assert abs(total - 1.0) < 1e-8, total


@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "lognormal"])
def test_log_prob_eps_offset(pi0: str) -> None:
    """With ε > 0 the density is exp(f)(π0+ε)/Z (method §1.1), so its integral is exactly
    1 + ε ∫exp(f) / Z: a fixed, documented offset, nothing else."""
    eps = 1e-4
    prior = make_prior(pi0, P=1, Q=1, seed=9, eps=eps)
    x, w = _gl(*DOMAIN[pi0], 300)
    f = energy_on(prior, x)[:, 0, 0]
    Z = float(w @ (np.exp(f) * pi0_density(pi0, x)))
    want = 1.0 + eps * float(w @ np.exp(f)) / Z
    total = float(w @ np.exp(prior.log_prob(x[:, None, None])))
    assert abs(total - want) < 1e-8, (total, want)


@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "lognormal"])
def test_log_prob_one_coordinate_at_a_time(pi0: str) -> None:
    """Q=3, P=2: integrating exp(log π) over coordinate j with the others fixed at z0 gives
    Π_{i≠j} π_i(z0_i); multiplying over all j gives π(z0)^{J-1}, J = Q·P."""
    prior = make_prior(pi0, P=2, Q=3, seed=10, eps=0.0)
    z0 = latent_inputs(prior, 1, seed=11)
    x, w = _gl(*DOMAIN[pi0], 300)
    J = prior.Q * prior.P
    log_I = 0.0
    for q in range(prior.Q):
        for p in range(prior.P):
            z = np.repeat(z0, x.size, axis=0)
            z[:, q, p] = x
            log_I += math.log(float(w @ np.exp(prior.log_prob(z))))
    assert abs(log_I - (J - 1) * float(prior.log_prob(z0)[0])) < 1e-8


# ---- inverse transform sampling ------------------------------------------------------------

N_DRAWS = 20_000
ALPHA = 1e-3  # family-wise significance level of the KS tests (Bonferroni over (q, p))


class _FixedUniforms:
    """Stands in for a Generator: ``random`` returns given u's, to probe z(u) directly."""

    def __init__(self, u: np.ndarray) -> None:
        self.u = u

    def random(self, shape, dtype=None):
        return np.ascontiguousarray(np.broadcast_to(self.u.reshape((-1,) + (1,) * (len(shape) - 1)), shape))


@pytest.mark.parametrize("shared", [True, False], ids=["shared_uniform", "independent"])
@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "lognormal"])
def test_inverse_transform_samples_ks(pi0: str, shared: bool) -> None:
    Q, P = 3, 2
    prior = make_prior(pi0, P=P, Q=Q, seed=12, shared_uniform=shared)
    z = prior.sample(N_DRAWS, BE.rng(13))
    assert z.shape == (N_DRAWS, Q, P) and z.dtype == np.float64
    lo, hi = DOMAIN[pi0]
    assert z.min() >= lo and z.max() <= hi
    t, cdf = reference_cdf(prior)
    level = ALPHA / (Q * P)  # Bonferroni
    cdf0 = np.cumsum(pi0_density(pi0, t)) / np.sum(pi0_density(pi0, t))  # π0 alone
    worst_vs_pi0 = 1.0
    for q in range(Q):
        for p in range(P):
            res = stats.kstest(z[:, q, p], lambda s: np.interp(s, t, cdf[:, q, p]))
            assert res.pvalue > level, (q, p, res)
            worst_vs_pi0 = min(worst_vs_pi0, stats.kstest(z[:, q, p], lambda s: np.interp(s, t, cdf0)).pvalue)
    # power: the same test rejects π0 alone, so the energy is non-trivial and seen
    assert worst_vs_pi0 < 1e-12

    se = 1.0 / math.sqrt(N_DRAWS)
    for p in range(P):
        ranks = [stats.rankdata(z[:, q, p]) for q in range(Q)]
        for q in range(1, Q):
            if shared:  # same u_p for every q: z_{q,p} = F_{q,p}^{-1}(u_p) are comonotone
                np.testing.assert_array_equal(ranks[q], ranks[0])
            else:  # independent u_{q,p}: rank correlation ~ N(0, 1/n)
                rho = stats.spearmanr(z[:, 0, p], z[:, q, p]).statistic
                assert abs(rho) < 4 * se, (p, q, rho)
    for q in range(Q):  # different p never share a uniform
        rho = stats.spearmanr(z[:, q, 0], z[:, q, 1]).statistic
        assert abs(rho) < 4 * se, (q, rho)


@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "lognormal"])
def test_inverse_transform_quantile_accuracy(pi0: str) -> None:
    """Deterministic check, sharper than KS: feed u on a grid and compare F_ref(z(u)) with u.
    The sampler's CDF is piecewise linear over 100 GL cells (mass w_k·g(x_k) per cell), so
    an O(1e-4) discretisation error is expected; 1e-3 bounds it with margin."""
    prior = make_prior(pi0, P=2, Q=3, seed=14)
    u = np.linspace(5e-4, 1 - 5e-4, 1999)
    z = prior.sample(u.size, _FixedUniforms(u))
    t, cdf = reference_cdf(prior)
    err = max(np.abs(np.interp(z[:, q, p], t, cdf[:, q, p]) - u).max()
              for q in range(prior.Q) for p in range(prior.P))
    assert err < 1e-3, err
    assert np.all(np.diff(z, axis=0) > 0)  # strictly increasing in u


def test_sampling_reproducible_and_seed_dependent() -> None:
    prior = make_prior("gaussian", seed=15)
    a = prior.sample(100, BE.rng(1))
    np.testing.assert_array_equal(a, prior.sample(100, BE.rng(1)))
    assert not np.array_equal(a, prior.sample(100, BE.rng(2)))


def test_uniform_pi0_samples_stay_in_support() -> None:
    """π0 = U(0,1): every draw must lie in [0, 1], where the prior has mass.

    KNOWN FAILURE (same root cause as test_log_Z_uniform_pi0_zero_energy_is_one): the
    GL cell that straddles 0 (and the one straddling 1) gets the mass of its inside node and
    is filled linearly over its whole width, so draws land in about [-0.005, 1.005].
    """
    prior = make_prior("uniform", seed=16)
    z = prior.sample(N_DRAWS, BE.rng(17))
    assert z.min() >= 0.0 and z.max() <= 1.0, (z.min(), z.max())


def test_quadrature_error_reports_unresolved_energies():
    """The K-vs-2K check is tiny for a smooth energy and large for one that oscillates
    faster than K nodes can resolve (FFT, G = 50, large high-frequency coefficients)."""
    be = get_backend("cpu", "float64")
    smooth = UnivariatePrior(be, 2, 3, KANSpec(basis="RBF", grid_size=5), be.rng(0), n_nodes=100)
    assert smooth.quadrature_error() < 1e-10
    wiggly = UnivariatePrior(be, 2, 3, KANSpec(basis="FFT", grid_size=50), be.rng(0), n_nodes=20)
    wiggly.layer.params["coef"][...] = be.rng(1).standard_normal(wiggly.layer.params["coef"].shape)
    assert wiggly.quadrature_error() > 1e-2
