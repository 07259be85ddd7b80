"""Grid updating (method §2.1): quantile grids, the ridge least-squares refit, RBF scale, domain, schedule."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import real_fmnist
from kaem.backend import get_backend
from kaem.config import load_config
from kaem.nn.grid_update import (DOMAIN_MARGIN, REFIT_RIDGE, blended_grid, grid_update_due, prior_domain_from_grid,
                                 update_layer_grid, update_pointwise_grid)
from kaem.nn.kan import KANLayer, KANSpec
from kaem.model import KAEM

GRID_BASES = ["RBF", "B-spline", "RSWAF"]


def _layer(be, basis, in_dim=3, out_dim=4, G=8, seed=0):
    rng = be.rng(seed)
    layer = KANLayer(be, in_dim, out_dim, KANSpec(basis=basis, grid_size=G, init_tau=0.9), rng)
    layer.params["coef"][...] = 0.3 * rng.standard_normal(layer.params["coef"].shape)
    return layer, rng


def test_grid_follows_quantiles_of_skewed_samples(be64):
    rng = be64.rng(1)
    x = rng.lognormal(0.0, 0.6, size=(4001, 2))  # strongly right-skewed
    G = 10
    adaptive = blended_grid(x, G, ratio=0.0)
    want = np.quantile(x, np.linspace(0, 1, G + 1), axis=0, method="linear").T
    np.testing.assert_allclose(adaptive, want, rtol=0, atol=1e-12)
    blended = blended_grid(x, G, ratio=0.05)
    uniform = np.linspace(x.min(0), x.max(0), G + 1).T
    np.testing.assert_allclose(blended, 0.05 * uniform + 0.95 * want, atol=1e-12)
    spacing = np.diff(adaptive, axis=1)
    assert (spacing[:, 1] < spacing[:, -2]).all()  # denser where the mass is


def _ridge(A):
    """λ of the refit for designs A (n, N, nb) (kaem/numerics.lstsq_batched with REFIT_RIDGE)."""
    G = A.transpose(0, 2, 1) @ A
    nb = G.shape[-1]
    rel = max((np.finfo(A.dtype).eps * max(A.shape[1:])) ** 2, REFIT_RIDGE / nb)
    return rel * np.trace(G, axis1=1, axis2=2)


def _assert_within_ridge_bound(A, c_old, c_new):
    """The refit of functions that the grid represents exactly, A c_old, with ridge λ:
    c = (AᵀA + λI)⁻¹AᵀA c_old, so A(c − c_old) = −λA(AᵀA + λI)⁻¹c_old and its norm is at most
    max_σ λσ/(σ² + λ)·‖c_old‖ = ½√λ‖c_old‖ (σ the singular values of A), for every function.
    A (n, N, nb), c_old and c_new (n, nb, k)."""
    lam = _ridge(A)
    err = np.linalg.norm(A @ (c_new - c_old), axis=1)  # (n, k)
    bound = 0.5 * np.sqrt(lam)[:, None] * np.linalg.norm(c_old, axis=1)
    scale = np.linalg.norm(A @ c_old, axis=1)
    assert (err <= bound + 1e-9 * scale).all()
    assert (err <= 1e-2 * scale).all()  # and the bound is small: the functions are kept (RBF: 1e-4)


@pytest.mark.parametrize("basis", GRID_BASES)
def test_refit_is_exact_when_the_grid_does_not_move(be64, basis):
    """Samples whose uniform grid equals the old grid (ratio 1, ends at ±1.2): the old
    functions are representable, so the ridge refit reproduces them to its bound ½√λ‖c‖ on
    the samples (λ = REFIT_RIDGE times the mean eigenvalue of AᵀA), below 1e-2 relative."""
    layer, rng = _layer(be64, basis)
    x = np.concatenate([np.full((1, 3), -1.2), np.full((1, 3), 1.2), rng.uniform(-1.2, 1.2, (300, 3))])
    c_old = layer.params["coef"].copy()  # (in, out, nb)
    update_layer_grid(layer, x, ratio=1.0)
    A = layer.basis.evaluate(x, layer.buffers["grid"], layer.tau).transpose(1, 0, 2)  # (in, N, nb)
    _assert_within_ridge_bound(A, c_old.transpose(0, 2, 1), layer.params["coef"].transpose(0, 2, 1))


@pytest.mark.parametrize("basis", GRID_BASES)
def test_refit_is_the_least_squares_optimum(be64, basis):
    """When the grid moves to skewed samples the old spline is generally not representable;
    the refit must then be the best possible on the new grid: for every (input, output)
    function it minimises ‖A c − s‖² + λ‖c‖² (s the old spline on the samples, λ the refit's
    ridge), as numpy.linalg.lstsq on the augmented system [A; √λ I] does (relative 1e-9)."""
    layer, rng = _layer(be64, basis)
    x = rng.gamma(2.0, 0.4, size=(400, 3)) - 0.8
    spline_old = (layer.basis.evaluate(x, layer.buffers["grid"], layer.tau)[:, :, None, :]
                  * layer.params["coef"][None]).sum(-1)  # (N, in, out)
    update_layer_grid(layer, x, ratio=0.05)
    Bn = layer.basis.evaluate(x, layer.buffers["grid"], layer.tau)  # (N, in, nb)
    lam = _ridge(Bn.transpose(1, 0, 2))
    nb = Bn.shape[-1]
    for i in range(3):  # reference solution, one input at a time (a test, not a hot path)
        A = np.concatenate([Bn[:, i], np.sqrt(lam[i]) * np.eye(nb)])
        y = np.concatenate([spline_old[:, i], np.zeros((nb, spline_old.shape[2]))])
        c_ref = np.linalg.lstsq(A, y, rcond=None)[0]
        best = np.linalg.norm(A @ c_ref - y, axis=0)
        ours = np.linalg.norm(A @ layer.params["coef"][i].T - y, axis=0)
        assert (ours <= best * (1 + 1e-9) + 1e-12 * np.linalg.norm(y, axis=0)).all()


@pytest.mark.parametrize("basis", GRID_BASES)
def test_pointwise_refit_is_exact_when_the_grid_does_not_move(be64, basis):
    """The pointwise (prior) refit, each function (q, p) on its own samples, within the
    ridge bound as above."""
    layer, rng = _layer(be64, basis, in_dim=3, out_dim=2)
    z = rng.uniform(-1.2, 1.2, (200, 2, 3))
    z[0], z[1] = -1.2, 1.2
    c_old = layer.params["coef"].copy()  # (in=P, out=Q, nb)
    update_pointwise_grid(layer, z, ratio=1.0)
    B = layer.basis.evaluate(z, layer.buffers["grid"], layer.tau)  # (N, Q, P, nb)
    A = B.transpose(2, 1, 0, 3).reshape(6, 200, -1)  # one design per function (p, q)
    _assert_within_ridge_bound(A, c_old.reshape(6, -1)[:, :, None], layer.params["coef"].reshape(6, -1)[:, :, None])


def test_rbf_scale_equals_new_spacing(be64):
    layer, rng = _layer(be64, "RBF", G=6)
    x = rng.uniform(-0.3, 2.1, (500, 3))
    update_layer_grid(layer, x, ratio=1.0)  # uniform: spacing (max − min)/G
    grid = layer.buffers["grid"]
    h = (x.max(0) - x.min(0)) / 6
    np.testing.assert_allclose(np.diff(grid, axis=1), np.repeat(h[:, None], 6, 1), rtol=1e-12)
    tau = float(layer.tau)
    at = grid[:, 2] + h * tau  # one width from knot 2: B_2 = exp(−1/2)
    B = layer.basis.evaluate(at[None, :], grid, layer.tau)[0]  # (in, nb)
    np.testing.assert_allclose(B[:, 2], np.exp(-0.5), rtol=1e-12)


def test_grid_free_bases_are_skipped(be64):
    layer, rng = _layer(be64, "FFT")
    before = layer.params["coef"].copy()
    assert update_layer_grid(layer, rng.standard_normal((50, 3)), 0.05) is False
    np.testing.assert_array_equal(layer.params["coef"], before)


def test_prior_domain_widens_and_never_shrinks_for_negative_min():
    pts = np.array([[-2.0, -1.0, 0.5], [0.5, 1.0, 3.0]])
    dom = prior_domain_from_grid(pts)
    rng_ = pts[:, -1] - pts[:, 0]
    np.testing.assert_allclose(dom[:, 0], pts[:, 0] - DOMAIN_MARGIN * rng_)
    np.testing.assert_allclose(dom[:, 1], pts[:, -1] + DOMAIN_MARGIN * rng_)
    assert (dom[:, 0] < pts[:, 0]).all() and (dom[:, 1] > pts[:, -1]).all()  # 0.9·(−2) would shrink


def test_model_update_moves_prior_domain_and_keeps_density_normalised(be64):
    cfg = load_config("mnist", overrides=["EbmModel.layer_widths=3,4", "GeneratorModel.widths=4,5",
                                          "EbmModel.grid_size=6", "GeneratorModel.grid_size=6",
                                          "TRAINING.dtype=float64"])
    model = KAEM(cfg, (1, 2, 3), be64, seed=0)
    rng = be64.rng(0)
    z_post = 0.4 * rng.standard_normal((200, 4, 3)) + 0.3
    assert model.update_grids(z_post)
    pts = model.prior.layer.basis.interior(model.prior.layer.buffers["grid"])
    np.testing.assert_allclose(model.prior.buffers["domain"], prior_domain_from_grid(pts))
    # the sampler and log Z follow the new domain
    z = model.sample_prior(2000, rng)
    lo, hi = model.prior.buffers["domain"][:, 0], model.prior.buffers["domain"][:, 1]
    assert (z >= lo[None, None, :] - 1e-12).all() and (z <= hi[None, None, :] + 1e-12).all()
    assert np.isfinite(model.prior.log_Z(cache=False)).all()


def test_schedule_interval_grows():
    due = [i for i in range(1, 2000) if grid_update_due(i, 0, 100, 0.999)]
    # direct statement of the rule: the first iteration i with i − 0 >= floor(100·1.001^i)
    first = next(i for i in range(1, 2000) if i >= np.floor(100 * 1.001 ** i))
    assert due[0] == first
    assert not grid_update_due(50, 0, 100, 0.999) and grid_update_due(5, 0, 1, 0.999)
    assert grid_update_due(10 ** 7, 0, 100, 0.999) is False  # huge iteration: no overflow


def test_training_with_frequent_grid_updates_stays_finite_and_improves(tmp_path):
    from kaem.run.trainer import Trainer

    x_train, x_test = real_fmnist(1000, 300)
    be = get_backend("cpu", "float32")
    cfg = load_config("fmnist", overrides=["GRID_UPDATING.grid_update_frequency=4",
                                           "TRAINING.eval_importance_samples=300"])
    model = KAEM(cfg, (1, 28, 28), be, seed=0)
    tr = Trainer(model, be, x_train, x_test, str(tmp_path), seed=0, dataset="fmnist", log=lambda m: None)
    rows = tr.run(epochs=3)
    assert sum(r.get("grid_updated", 0) for r in rows[1:]) >= 5
    lls = [r["heldout_loglik_nats"] for r in rows]
    assert np.isfinite(lls).all() and all(np.isfinite(v).all() for v in model.parameters().values())
    assert lls[1] > lls[0] and lls[2] > lls[1] and lls[3] > lls[2], lls
