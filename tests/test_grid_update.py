"""Grid updating (method §2.1): quantile grids, least-squares refit, RBF scale, domain, schedule."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import real_fmnist
from kaem.backend import get_backend
from kaem.config import load_config
from kaem.nn.grid_update import (DOMAIN_MARGIN, blended_grid, grid_update_due, prior_domain_from_grid,
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


@pytest.mark.parametrize("basis", GRID_BASES)
def test_refit_is_exact_when_the_grid_does_not_move(be64, basis):
    """Samples whose uniform grid equals the old grid (ratio 1, ends at ±1.2): the old
    functions are representable, so the refit reproduces them to the solver's precision
    (relative ridge 1e-10 -> errors ~1e-9; tolerance 1e-7)."""
    layer, rng = _layer(be64, basis)
    x = np.concatenate([np.full((1, 3), -1.2), np.full((1, 3), 1.2), rng.uniform(-1.2, 1.2, (300, 3))])
    y0 = layer.forward(x, cache=False)
    update_layer_grid(layer, x, ratio=1.0)
    y1 = layer.forward(x, cache=False)
    assert np.abs(y1 - y0).max() <= 1e-7 * np.abs(y0).max()


@pytest.mark.parametrize("basis", GRID_BASES)
def test_refit_is_the_least_squares_optimum(be64, basis):
    """When the grid moves to skewed samples the old spline is generally not representable;
    the refit must then be the best possible on the new grid: its residual on the samples
    equals numpy.linalg.lstsq's for every (input, output) function (relative 1e-6)."""
    layer, rng = _layer(be64, basis)
    x = rng.gamma(2.0, 0.4, size=(400, 3)) - 0.8
    spline_old = (layer.basis.evaluate(x, layer.buffers["grid"], layer.tau)[:, :, None, :]
                  * layer.params["coef"][None]).sum(-1)  # (N, in, out)
    update_layer_grid(layer, x, ratio=0.05)
    Bn = layer.basis.evaluate(x, layer.buffers["grid"], layer.tau)  # (N, in, nb)
    for i in range(3):  # reference solution, one input at a time (a test, not a hot path)
        c_ref = np.linalg.lstsq(Bn[:, i], spline_old[:, i], rcond=None)[0]
        best = np.linalg.norm(Bn[:, i] @ c_ref - spline_old[:, i], axis=0)
        ours = np.linalg.norm(Bn[:, i] @ layer.params["coef"][i].T - spline_old[:, i], axis=0)
        assert (ours <= best + 1e-6 * np.linalg.norm(spline_old[:, i], axis=0)).all()


@pytest.mark.parametrize("basis", GRID_BASES)
def test_pointwise_refit_is_exact_when_the_grid_does_not_move(be64, basis):
    layer, rng = _layer(be64, basis, in_dim=3, out_dim=2)
    z = rng.uniform(-1.2, 1.2, (200, 2, 3))
    z[0], z[1] = -1.2, 1.2
    f0 = layer.forward_pointwise(z, cache=False)
    update_pointwise_grid(layer, z, ratio=1.0)
    assert np.abs(layer.forward_pointwise(z, cache=False) - f0).max() <= 1e-7 * np.abs(f0).max()


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
