"""The mixture prior (kaem/priors/mixture.py, method §1.2): density against an independent
computation, finite-difference checks of every backward pass, the contrastive-divergence
gradient as an unbiased estimate of the exact one, inverse-transform samples against the
quadrature CDF of the mixture (KS), grid updating, the objectives and checkpoints.
float64, fixed seeds, random non-trivial parameters."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from conftest import PAIR, randomise, randomise_kan, tiny_config
from gradcheck import away_from, check_grad, check_grads, rel_error
from kaem.backend import get_backend
from kaem.nn.kan import KANSpec
from kaem.model import KAEM
from kaem.build import build_prior as make_prior, prior_kind
from kaem.priors import MixturePrior

BE = get_backend("cpu", "float64")
TOL = 1e-6
DOMAIN = {"ebm": (-1.2, 1.2), "gaussian": (-1.2, 1.2), "learnable_gaussian": (-1.2, 1.2), "lognormal": (0.0, 4.0)}


def make_mixture(pi0: str = "gaussian", basis: str = "RBF", P: int = 3, Q: int = 2, seed: int = 0,
                 train: bool = True, quadrature: str = "gausslegendre", n_nodes: int = 100,
                 eps: float = 1e-4) -> MixturePrior:
    """A mixture with random O(1) energies, non-uniform proportions and (learnable π0)
    μ_p, σ_p away from 0, 1."""
    spec = KANSpec(basis=basis, grid_size=5, grid_range=(-1.2, 1.2))
    prior = MixturePrior(BE, P, Q, spec, BE.rng(seed), pi0=pi0, n_nodes=n_nodes, eps=eps,
                         quadrature=quadrature, train_proportions=train)
    randomise_kan(prior.params, 700 + seed)
    r, p = np.random.default_rng(seed), prior.params
    if train:
        p["logits"][...] = r.normal(0.0, 1.0, p["logits"].shape)
    if pi0 == "learnable_gaussian":
        p["pi0_mu"][...] = r.uniform(-0.4, 0.4, p["pi0_mu"].shape)
        p["pi0_log_sigma"][...] = r.uniform(-0.5, 0.3, p["pi0_log_sigma"].shape)
    return prior


def latents(prior: MixturePrior, n: int, seed: int) -> np.ndarray:
    lo, hi = (0.05, 3.5) if prior.pi0_name == "lognormal" else (-1.3, 1.3)
    grid = prior.layer.buffers["grid"]
    bad = [0.0] + ([] if grid is None else list(np.unique(grid)))
    return away_from(np.random.default_rng(seed), (n, prior.Q), lo, hi, bad)


def component_densities(prior: MixturePrior, t: np.ndarray) -> np.ndarray:
    """π_{q,p}(t_m) (M, P, Q) built independently of the library's quadrature: f through the
    layer, π0 from scipy.stats, Z by the trapezoid rule on 40 001 points of the domain
    (error ~ h²·max|g''|/12 ≈ 1e-9 relative here)."""
    lo, hi = DOMAIN[prior.pi0_name]
    fine = np.linspace(lo, hi, 40_001)

    def unnorm(x):
        f = prior.layer.forward_pointwise(np.ascontiguousarray(np.broadcast_to(x[:, None, None], (x.size, 1, prior.Q))),
                                          cache=False)  # (M, P, Q)
        if prior.pi0_name == "learnable_gaussian":
            mu, sig = prior.params["pi0_mu"], np.exp(prior.params["pi0_log_sigma"])  # (P, 1)
            p0 = stats.norm.pdf(x[:, None, None], mu[None], sig[None])
        else:
            p0 = {"ebm": np.ones_like(x), "gaussian": stats.norm.pdf(x),
                  "lognormal": stats.lognorm.pdf(x, s=1.0)}[prior.pi0_name][:, None, None]
        return np.exp(f) * p0

    Z = np.trapezoid(unnorm(fine), fine, axis=0)
    return unnorm(t) / Z


def mixture_cdf(prior: MixturePrior, m: int = 20_001) -> tuple[np.ndarray, np.ndarray]:
    """CDF of every π_q = Σ_p α_{q,p} π_{q,p} on m points: (t (m,), cdf (m, Q))."""
    lo, hi = DOMAIN[prior.pi0_name]
    t = np.linspace(lo, hi, m)
    dens = (component_densities(prior, t) * prior.alpha().T[None]).sum(axis=1)  # (m, Q)
    cell = 0.5 * (dens[1:] + dens[:-1]) * np.diff(t)[:, None]
    cdf = np.concatenate([np.zeros((1, prior.Q)), np.cumsum(cell, axis=0)])
    return t, cdf / cdf[-1]


# ---- config and registry -------------------------------------------------------------------

def test_config_selects_the_mixture():
    cfg = tiny_config("MixtureModel.use_mixture_prior=true", "EbmModel.π_0=learnable_gaussian")
    assert prior_kind(cfg) == "mixture"
    prior = make_prior(cfg, BE, BE.rng(0))
    assert isinstance(prior, MixturePrior) and prior.latent_shape == (4,) and prior.P == 3
    assert "logits" not in prior.params  # proportions fixed and uniform by default
    np.testing.assert_allclose(prior.alpha(), np.full((4, 3), 1 / 3))
    assert prior.params["pi0_mu"].shape == (3, 1)


# ---- the density --------------------------------------------------------------------------

@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "lognormal", "learnable_gaussian"])
def test_log_prob_matches_independent_formula(pi0):
    """log π(z) = Σ_q log Σ_p α_{q,p} π_{q,p}(z_q), every piece computed independently."""
    prior = make_mixture(pi0, eps=0.0, seed=1)
    z = latents(prior, 7, seed=2)
    comp = np.stack([component_densities(prior, z[:, q])[:, :, q] for q in range(prior.Q)], axis=2)
    want = np.log((comp * prior.alpha().T[None]).sum(axis=1)).sum(axis=1)
    assert rel_error(prior.log_prob(z), want) < 1e-8
    np.testing.assert_allclose(prior.log_unnorm(z), prior.log_prob(z), rtol=1e-12)


@pytest.mark.parametrize("pi0", ["gaussian", "learnable_gaussian"])
def test_density_integrates_to_one(pi0):
    """Q = 2: Σ w exp(log π) over a tensor Gauss–Legendre grid (200² nodes) is 1 (ε = 0)."""
    prior = make_mixture(pi0, Q=2, eps=0.0, seed=3)
    x, w = np.polynomial.legendre.leggauss(200)
    lo, hi = DOMAIN[pi0]
    x, w = lo + 0.5 * (hi - lo) * (x + 1), 0.5 * (hi - lo) * w
    z = np.stack(np.meshgrid(x, x, indexing="ij"), axis=-1).reshape(-1, 2)
    total = float(np.outer(w, w).ravel() @ np.exp(prior.log_prob(z)))
    assert abs(total - 1.0) < 1e-8, total


# ---- finite-difference checks --------------------------------------------------------------

@pytest.mark.parametrize("basis,pi0", [("RBF", "gaussian"), ("B-spline", "ebm"), ("FFT", "learnable_gaussian"),
                                       ("Cheby", "lognormal"), ("RSWAF", "learnable_gaussian")])
def test_log_density_gradients(basis, pi0):
    """log π(z) with log Z differentiated: every parameter (coefficients, τ, logits, π0's μ
    and log σ) and z; and the sampler's z-gradient."""
    prior = make_mixture(pi0, basis=basis, seed=4)
    z = latents(prior, 5, seed=5)
    c = np.random.default_rng(6).normal(size=5)

    def loss():
        return float(c @ prior.log_prob(z))

    prior.zero_grad()
    prior.log_unnorm(z)
    dz = prior.log_unnorm_backward(c)
    check_grad(loss, z, dz, tol=TOL, name=f"{basis}/{pi0} dz")
    check_grads(loss, prior.params, prior.grads, tol=TOL, name=f"{basis}/{pi0}")
    lp, gz = prior.sampler_log_density()(z)
    np.testing.assert_allclose(lp, prior.log_prob(z), rtol=1e-12)
    assert rel_error(gz, dz / c[:, None]) < 1e-10


@pytest.mark.parametrize("quadrature", ["gausslegendre", "trapezium"])
def test_exact_prior_loss_gradient(quadrature):
    prior = make_mixture("learnable_gaussian", quadrature=quadrature, seed=7)
    z = latents(prior, 6, seed=8)
    a = np.random.default_rng(9).dirichlet(np.ones(6))

    def loss():
        prior.zero_grad()
        return prior.prior_loss(z, a, exact_logZ=True)

    val = float(loss())
    assert abs(val + float(a @ prior.log_prob(z))) < 1e-10 * abs(val)
    check_grads(loss, prior.params, {k: v.copy() for k, v in prior.grads.items()}, tol=TOL)


def test_contrastive_divergence_gradient_is_unbiased():
    """The CD gradient (prior draws reweighted by r/α) has the exact gradient as its mean:
    200 independent CD batches of S' = 200 draws; every parameter's mean within 5 standard
    errors of the exact value (two-sided, ≈ 6e-7 per entry; ~200 entries). The value is the
    exact one."""
    prior = make_mixture("learnable_gaussian", P=3, Q=2, seed=10)
    z = latents(prior, 8, seed=11)
    a = np.random.default_rng(12).dirichlet(np.ones(8))
    prior.zero_grad()
    exact_val = float(prior.prior_loss(z, a, exact_logZ=True))
    exact = {k: v.copy() for k, v in prior.grads.items()}
    rng = BE.rng(13)
    draws = []
    for _ in range(200):  # independent estimates, not a hot loop
        prior.zero_grad()
        val = float(prior.prior_loss(z, a, z_cd=prior.sample(200, rng)))
        assert abs(val - exact_val) < 1e-12 * abs(exact_val)
        draws.append({k: v.copy() for k, v in prior.grads.items()})
    se = {}
    for k, want in exact.items():
        g = np.stack([d[k] for d in draws])
        se[k] = g.std(axis=0, ddof=1) / math.sqrt(len(g))
        assert np.all(np.abs(g.mean(axis=0) - want) <= 5 * se[k] + 1e-12), k
    # power: the naive form, ∂ log Z_{q,p} weighted by α_{q,p} instead of r̄_{q,p}, has the
    # mean exact + Σ (α − r̄) ∂ log Z, which this test would reject by many standard errors
    prior.zero_grad()
    prior.log_unnorm(z)
    r_bar = np.einsum("n,npq->pq", a, prior._r)
    prior.zero_grad()
    prior.log_Z()
    prior.log_Z_backward(prior.alpha().T - r_bar)
    assert max(np.max(np.abs(prior.grads[k]) / (se[k] + 1e-300)) for k in ("coef", "w_sp")) > 20


# ---- inverse transform sampling --------------------------------------------------------------

N_DRAWS = 20_000


@pytest.mark.parametrize("pi0,basis,nodes", [("gaussian", "RBF", 100), ("lognormal", "B-spline", 100),
                                             ("learnable_gaussian", "FFT", 200)])
def test_samples_ks_against_the_mixture_cdf(pi0, basis, nodes):
    """Draws of every coordinate pass a KS test against Σ_p α_{q,p} F_{q,p} (built
    independently, 2e4 points), and the same test rejects the equal-weight mixture (the
    proportions are seen). Coordinates independent. The random FFT energy (coefficients
    N(0, 1) up to frequency 5τ) needs 200 nodes: at 100 its log Z is off by 4e-2 and the
    sampler's CDF by 2e-2, which 20 000 draws resolve (KS critical distance ≈ 1.5e-2)."""
    prior = make_mixture(pi0, basis=basis, P=3, Q=3, seed=14, n_nodes=nodes)
    assert prior.quadrature_error() < 1e-3
    z = prior.sample(N_DRAWS, BE.rng(15))
    assert z.shape == (N_DRAWS, 3) and z.dtype == np.float64
    lo, hi = DOMAIN[pi0]
    assert z.min() >= lo and z.max() <= hi
    t, cdf = mixture_cdf(prior)
    level = 1e-3 / prior.Q
    for q in range(prior.Q):
        assert stats.kstest(z[:, q], lambda s: np.interp(s, t, cdf[:, q])).pvalue > level, q
    prior.params["logits"][...] = 0.0
    _, cdf_eq = mixture_cdf(prior)
    assert min(stats.kstest(z[:, q], lambda s: np.interp(s, t, cdf_eq[:, q])).pvalue for q in range(3)) < 1e-12
    se = 1 / math.sqrt(N_DRAWS)
    for q in range(1, 3):
        assert abs(stats.spearmanr(z[:, 0], z[:, q]).statistic) < 4 * se


def test_component_frequencies_follow_the_proportions():
    """With energies zero and π0 = gaussian every component is the same density, so the
    sample is π0 whatever the choice; with separated learnable means the choice is visible:
    the fraction of draws nearest to each μ_p estimates α_{q,p} (binomial standard error)."""
    prior = make_mixture("learnable_gaussian", P=3, Q=2, seed=16)
    for k in ("coef", "w_base", "w_sp"):
        prior.params[k][...] = 0.0
    prior.params["pi0_mu"][:, 0] = [-0.8, 0.0, 0.8]
    prior.params["pi0_log_sigma"][...] = math.log(0.05)
    z = prior.sample(N_DRAWS, BE.rng(17))
    nearest = np.abs(z[:, :, None] - np.array([-0.8, 0.0, 0.8])).argmin(axis=2)  # (n, Q)
    freq = np.stack([(nearest == p).mean(axis=0) for p in range(3)], axis=1)  # (Q, P)
    alpha = prior.alpha()
    se = np.sqrt(alpha * (1 - alpha) / N_DRAWS)
    assert np.all(np.abs(freq - alpha) < 5 * se), (freq, alpha)


def test_sampling_reproducible():
    prior = make_mixture(seed=18)
    np.testing.assert_array_equal(prior.sample(50, BE.rng(1)), prior.sample(50, BE.rng(1)))
    assert not np.array_equal(prior.sample(50, BE.rng(1)), prior.sample(50, BE.rng(2)))


# ---- grid updating ---------------------------------------------------------------------------

def test_grid_update_refits_every_component_on_its_coordinate():
    """Input q's grid spans the samples z[:, q] (the domain = that span widened by 10%), and
    each component's spline part is the ridge least-squares refit (kaem/nn/grid_update.py,
    REFIT_RIDGE) of the old one at z[:, q]: the optimum of the augmented system [A; √λ I]."""
    from kaem.nn.grid_update import REFIT_RIDGE

    prior = make_mixture("ebm", basis="RBF", P=3, Q=2, seed=19)
    z = BE.rng(20).normal(0.3, 0.3, (400, 2))
    basis, tau = prior.layer.basis, prior.layer.tau
    old = np.einsum("nqg,qpg->npq", basis.evaluate(z, prior.layer.buffers["grid"], tau), prior.params["coef"])
    assert prior.update_grid(z, 0.05)
    grid = prior.layer.buffers["grid"]
    np.testing.assert_allclose(grid[:, [0, -1]], np.stack([z.min(0), z.max(0)], axis=1), rtol=1e-12)
    span = z.max(0) - z.min(0)
    np.testing.assert_allclose(prior.buffers["domain"], np.stack([z.min(0) - 0.1 * span, z.max(0) + 0.1 * span], 1),
                               rtol=1e-12)
    new = basis.evaluate(z, grid, tau)  # (N, Q, nb)
    for q in range(2):
        A = new[:, q]
        nb = A.shape[1]
        lam = max((np.finfo(A.dtype).eps * max(A.shape)) ** 2, REFIT_RIDGE / nb) * np.trace(A.T @ A)
        aug = np.concatenate([A, np.sqrt(lam) * np.eye(nb)])
        for p in range(3):
            best = A @ np.linalg.lstsq(aug, np.concatenate([old[:, p, q], np.zeros(nb)]), rcond=None)[0]
            ours = A @ prior.params["coef"][q, p]
            assert np.abs(ours - best).max() <= 1e-6 * np.abs(old[:, p, q]).max(), (q, p)
    assert not make_mixture("ebm", basis="FFT").update_grid(z, 0.05)


# ---- the model and the objectives ----------------------------------------------------------

MIX = ("MixtureModel.use_mixture_prior=true", "MixtureModel.train_proportions=true")
SHAPE = (1, 2, 3)


def _model(*overrides, pi0="gaussian", seed=1):
    m = KAEM(tiny_config(*MIX, *overrides, pi0=pi0), SHAPE, BE, seed=seed)
    randomise(m, BE.rng(seed + 10))
    return m


def test_generator_input_is_z_and_the_full_is_loss_gradient():
    """h = z; the whole IS loss (exact log Z) against finite differences, every parameter."""
    from kaem.objectives.importance import is_loss_and_grad

    m = _model("TRAINING.contrastive_divergence_training=false", PAIR, pi0="learnable_gaussian")
    rng = BE.rng(3)
    x, z = rng.random((3, m.D)), m.sample_prior(5, rng)
    assert z.shape == (5, 4)
    np.testing.assert_array_equal(m.prior.to_input(z), z)
    noise = rng.standard_normal((3, 5, m.D))
    W = rng.dirichlet(np.ones(5), size=3)

    def loss():
        return is_loss_and_grad(m, x, z, lambda ll: W, exact_logZ=True, noise=noise)[0]

    loss()
    grads = {k: v.copy() for k, v in m.gradients().items()}
    # the prior's parameters (the generator's are checked in test_generator.py)
    check_grads(loss, {k: v for k, v in m.parameters().items() if k.startswith("prior.")}, grads, tol=TOL)


MODES = {"is": [], "ula": ["POST_LANGEVIN.use_langevin=true"],
         "automala": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true"],
         "thermo": ["THERMODYNAMIC_INTEGRATION.num_temps=3"]}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("cd", [True, False], ids=["contrastive", "exact-logZ"])
def test_every_objective_runs_with_the_mixture(mode, cd):
    from kaem.objectives import objective_mode, training_step

    m = _model(*MODES[mode], f"TRAINING.contrastive_divergence_training={str(cd).lower()}",
               "TRAINING.importance_sample_size=8", "POST_LANGEVIN.iters=3",
               "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=2")
    assert objective_mode(m.cfg) == mode
    rng = BE.rng(4)
    x = rng.random((4, m.D))
    loss, diag = training_step(m, x, rng, iteration=0, n_updates=10, state={})
    assert np.isfinite(float(loss))
    assert all(np.isfinite(g).all() for g in m.gradients().values())
    assert np.abs(m.gradients()["prior.logits"]).sum() > 0 and np.abs(m.gradients()["prior.coef"]).sum() > 0
    assert diag["z"].shape[1:] == (4,)
    assert m.update_grids(diag["z"])  # grid updating from the step's posterior samples


def test_posterior_target_gradients():
    from kaem.likelihood.posterior import KAEMPosterior

    m = _model()
    rng = BE.rng(5)
    x, z = rng.random((2, m.D)), m.sample_prior(4, rng)
    t = KAEMPosterior(m, x)
    for name, fn in (("log_prior", t.log_prior), ("log_lik", t.log_lik)):
        _, grad = fn(z)
        check_grad(lambda: fn(z)[0].sum(), z, grad, tol=TOL, name=name)


def test_checkpoint_round_trip_via_cli(tmp_path, data_dir):
    """A mixture model trained by the CLI: the stored config says use_mixture_prior = true,
    the restored model has the same parameters and log density, and sample/plot-prior run."""
    import cli
    from kaem.run.checkpoint import load_checkpoint, restore_model

    out = tmp_path / "run"
    tiny = ["--set", "EbmModel.layer_widths=3,5", "--set", "GeneratorModel.widths=5,6",
            "--set", "EbmModel.grid_size=5", "--set", "GeneratorModel.grid_size=5",
            "--set", "MixtureModel.use_mixture_prior=true", "--set", "MixtureModel.train_proportions=true",
            "--set", "TRAINING.eval_importance_samples=20", "--set", "POST_LANGEVIN.iters=2"]
    assert cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "40",
                     "--n-test", "10", "--batch-size", "20", "--epochs", "1", "--mode", "ula",
                     "--out", str(out)] + tiny) == 0
    ckpt = load_checkpoint(str(out / "ckpt.npz"))
    assert "use_mixture_prior = true" in ckpt["config"] and "train_proportions = true" in ckpt["config"]
    assert "logits" in {k.split(".", 1)[1] for k in ckpt["params"]}
    be = get_backend("cpu", "float32")
    model = restore_model(ckpt, be)
    assert isinstance(model.prior, MixturePrior)
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(v, ckpt["params"][k])
    z = model.sample_prior(6, be.rng(0))
    assert z.shape == (6, 5) and np.isfinite(model.prior.log_prob(z)).all()
    assert cli.main(["sample", "--ckpt", str(out / "ckpt.npz"), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert cli.main(["plot-prior", "--ckpt", str(out / "ckpt.npz"), "--out", str(tmp_path / "p.png")]) == 0


def test_mixture_density_curves_and_figure():
    """The plotted π_q is a normalised density (trapezoid within its error bound), the sum
    of the plotted weighted components, and exp of the model's log density; the figure has
    MIX_COLUMNS panels to a row."""
    from kaem.plots import HEADER_H, MIX_COLUMNS, MIX_PANEL_SIZE, mixture_density_curves, mixture_density_grid
    from test_plots import _trapezoid_with_bound

    prior = make_mixture("learnable_gaussian", P=3, Q=5, seed=21, eps=0.0)
    z, mix, comps, pi0 = mixture_density_curves(prior, n_points=400, with_pi0=True)
    assert z.shape == mix.shape == pi0.shape == (400, 5) and comps.shape == (400, 3, 5)
    np.testing.assert_allclose(comps.sum(axis=1), mix, rtol=1e-12)
    for curve in (mix, pi0):
        integral, bound = _trapezoid_with_bound(z, curve)
        assert np.all(np.abs(integral - 1) <= 2 * bound + 1e-6), (integral, bound)
    np.testing.assert_allclose(np.log(mix[200]).sum(), prior.log_prob(z[200][None])[0], rtol=1e-10)
    img = mixture_density_grid(prior, ps=[0, 2], title="t")
    pw, ph = MIX_PANEL_SIZE
    assert img.size == (MIX_COLUMNS * pw, HEADER_H + 2 * ph)
    with pytest.raises(ValueError, match=r"valid: 0\.\.2"):
        mixture_density_grid(prior, ps=[3])
