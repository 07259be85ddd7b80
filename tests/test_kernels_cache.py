"""The KAN layer's W = w_sp ⊙ c cache (kaem/kernels/kan_weights.py, inside a
``fixed_parameters`` scope) cannot go stale, and the prior's sampler kernel
(kaem/kernels/rbf.py: value + z-derivative without the basis tensor, row blocks over the
threads) is exact.

W is reused only inside a ``fixed_parameters`` scope; every write to the parameters that
the library makes (optimiser step, grid update, checkpoint restore) and every in-place poke
by a test happens outside one or calls ``parameters_changed``.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config
from gradcheck import away_from, check_grad, rel_error
from kaem.backend import get_backend
from kaem.nn.bases import BASES
from kaem.nn.kan import KANLayer, KANSpec, fixed_parameters, parameters_changed
from kaem.model import KAEM
from kaem.optim import Adam

BE = get_backend("cpu", "float64")


def _layer(basis="RBF", seed=0):
    layer = KANLayer(BE, 3, 4, KANSpec(basis=basis, grid_size=5), BE.rng(seed))
    r = np.random.default_rng(seed)
    for p in layer.params.values():
        p += r.normal(0, 0.5, p.shape)
    return layer


def test_w_is_built_once_inside_a_scope_and_every_time_outside():
    layer = _layer()
    x = np.random.default_rng(1).uniform(-1, 1, (5, 3))
    assert layer.spline_weights() is not layer.spline_weights()
    with fixed_parameters():
        W = layer.spline_weights()
        layer.forward(x)
        assert layer.spline_weights() is W
        with fixed_parameters():  # nested scopes share the outer one
            assert layer.spline_weights() is W
        assert layer.spline_weights() is W
    with fixed_parameters():  # a new scope never sees the old W
        assert layer.spline_weights() is not W


def test_in_place_writes_outside_a_scope_are_seen():
    layer = _layer()
    x = np.random.default_rng(2).uniform(-1, 1, (5, 3))
    with fixed_parameters():
        y0 = layer.forward(x)
    layer.params["coef"][0, 1, 2] += 0.7  # a test's poke, an optimiser step, ...
    layer.params["w_sp"][1, 0] *= 1.5
    with fixed_parameters():
        y1 = layer.forward(x)
    want = layer.forward(x)  # outside any scope
    np.testing.assert_allclose(y1, want, rtol=1e-14)
    assert np.abs(y1 - y0).max() > 1e-3


def test_library_writers_inside_a_scope_invalidate():
    """Grid updating and checkpoint restore call parameters_changed, so even inside a scope
    the next forward uses the new arrays."""
    m = KAEM(tiny_config(), (1, 2, 3), BE, seed=0)
    rng = BE.rng(3)
    z = m.sample_prior(40, rng)
    h = m.prior.to_input(z)
    saved = {k: v.copy() for k, v in m.parameters().items()}, {k: v.copy() for k, v in m.buffers().items()}
    with fixed_parameters():
        g0 = m.generator.forward(h)
        for p in m.parameters().values():
            p += 0.1
        parameters_changed()
        g1 = m.generator.forward(h)
        assert np.abs(g1 - g0).max() > 1e-3
        m.load_arrays(*saved)  # restore: back to g0
        np.testing.assert_allclose(m.generator.forward(h), g0, rtol=1e-13)
        m.update_grids(z)
        W = m.generator.layers[1].spline_weights()
    want = (m.generator.layers[1].params["coef"] * m.generator.layers[1].params["w_sp"][..., None]).transpose(1, 0, 2)
    np.testing.assert_array_equal(W, want)


def test_training_steps_use_the_updated_parameters():
    """is_step opens its own scope; after Adam the next step must see the new parameters."""
    from kaem.objectives.importance import is_step

    m = KAEM(tiny_config(), (1, 2, 3), BE, seed=1)
    opt = Adam(m.parameters(), lr=0.05)
    rng = BE.rng(4)
    x = rng.random((4, m.D))
    for _ in range(2):
        is_step(m, x, rng)
        opt.step(m.gradients())
    layer = m.generator.layers[-1]
    h = rng.standard_normal((3, layer.in_dim))
    with fixed_parameters():
        got = layer.forward(h)
    W = (layer.params["coef"] * layer.params["w_sp"][..., None])
    B = layer.basis.evaluate(h, layer.buffers["grid"], layer.tau)
    want = np.einsum("nig,iog->no", B, W) + layer.act(h)[0] @ layer.params["w_base"]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("basis", sorted(BASES))
def test_derivative_pointwise_is_the_derivative_of_forward_pointwise(basis):
    """Values equal the pointwise forward; derivatives equal central differences (float64),
    also on a non-uniform grid (what grid updating leaves)."""
    layer = _layer(basis, seed=5)
    grid = layer.buffers["grid"]
    if grid is not None:
        grid += np.random.default_rng(6).uniform(-0.04, 0.04, grid.shape)
        grid.sort(axis=1)
    bad = [0.0] + (list(np.unique(grid)) if grid is not None else [])
    z = away_from(np.random.default_rng(7), (6, 4, 3), -1.5, 1.5, bad)
    f, df = layer.derivative_pointwise(z)
    assert rel_error(f, layer.forward_pointwise(z, cache=False)) < 1e-13
    check_grad(lambda: layer.forward_pointwise(z, cache=False).sum(), z, df, name=f"{basis} dz")


def test_rbf_value_and_slope_far_outside_the_grid_is_finite_and_exact():
    """Inputs many widths away from every knot (Langevin chains can wander there)."""
    layer = _layer("RBF", seed=8)
    z = np.array([-40.0, -6.0, 6.0, 40.0, 1e4])[:, None, None] * np.ones((1, 4, 3))
    f, df = layer.derivative_pointwise(z)
    assert np.isfinite(f).all() and np.isfinite(df).all()
    assert rel_error(f, layer.forward_pointwise(z, cache=False)) < 1e-13


@pytest.mark.parametrize("basis", ["RBF", "FFT"])
def test_derivative_pointwise_in_threaded_blocks_and_cache_chunks_equals_the_basis_tensor(monkeypatch, basis):
    """The sampler kernel split over 3 threads (and, for RBF, into many cache chunks per
    thread) equals the basis-tensor reference ``Basis.value_and_slope`` plus the base branch,
    float64, on a non-uniform grid and inputs far outside it; and the blocking changes no bit."""
    import kaem.kernels.rbf as rbf

    layer = _layer(basis, seed=9)
    grid = layer.buffers["grid"]
    if grid is not None:
        grid += np.random.default_rng(10).uniform(-0.04, 0.04, grid.shape)
        grid.sort(axis=1)
    z = np.random.default_rng(11).uniform(-2.0, 2.0, (37, 4, 3))
    z[0, 0] = [-40.0, 9.0, 1e4]
    monkeypatch.setattr(rbf, "VALUE_SLOPE_CHUNK", 20)  # several chunks in every row block
    monkeypatch.setenv("KAEM_THREADS", "1")
    f1, df1 = layer.derivative_pointwise(z)
    monkeypatch.setenv("KAEM_THREADS", "3")
    monkeypatch.setattr(rbf, "row_blocks", lambda xp, n, min_rows=1: [(0, 5), (5, 6), (6, 37)])
    f3, df3 = layer.derivative_pointwise(z)
    np.testing.assert_array_equal(f3, f1)
    np.testing.assert_array_equal(df3, df1)
    f0, df0 = KANLayer.derivative_pointwise.reference(layer, z)  # the basis tensor
    assert rel_error(f3, f0) < 1e-13
    assert rel_error(df3, df0) < 1e-13


def test_rbf_value_and_slope_in_float32_is_the_float64_value_to_rounding():
    """The speed case: float32 inputs give the float64 sums to a few float32 ulps of their
    terms' scale: Σ_g |W_g| for S0, and Σ_g |W_g|·(|a| + |a_g|)/w for S1 = (Σ a_g W_g B_g − a S0)/w."""
    import kaem.kernels.rbf as rbf
    from kaem.nn.kan import pointwise_spline

    layer = _layer("RBF", seed=12)
    W, grid, tau = layer.spline_weights(), layer.buffers["grid"], layer.tau
    z = np.random.default_rng(13).uniform(-1.5, 1.5, (50, 4, 3))
    B, Bz, _ = layer.basis.evaluate(z, grid, tau, derivs=True, dtau=False)
    S0, S1 = pointwise_spline(B, W), pointwise_spline(Bz, W)  # the basis tensor, float64
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    T0, T1 = rbf.value_and_slope(layer.basis, f32(z), f32(grid), f32(tau), f32(W))
    assert T0.dtype == np.float32 and T1.dtype == np.float32
    w = layer.basis.width(grid, tau)
    c = 0.5 * (grid[:, 0] + grid[:, -1])
    a_max = (np.abs(z - c) / w).max()
    k_max = (np.abs(grid - c[:, None]) / w[:, None]).max()
    scale0 = np.abs(W).sum(-1).max()
    ulps = 16 * np.finfo(np.float32).eps
    assert np.abs(T0 - S0).max() < ulps * scale0
    assert np.abs(T1 - S1).max() < ulps * scale0 * (a_max + k_max) / w.min()
