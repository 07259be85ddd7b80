"""Tests for the FFT, Cheby and RSWAF bases (kaem/bases.py, method §2).

Hand-written derivatives are checked against central differences in float64, first on the
basis itself (dB/dx, dB/dτ), then through a KAN layer used both as a generator layer
(``forward``/``backward``) and as prior functions (``forward_pointwise``/
``backward_pointwise``). All randomness is seeded.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial import chebyshev

import kaem.backend
from kaem.nn.bases import BASES, FFT, Cheby, RSWAF, make_basis
from kaem.nn.kan import KANLayer, KANSpec

NEW = ("FFT", "Cheby", "RSWAF")
TAU = 0.8  # ≠ 1 so that every τ factor matters; < 1 also sends tanh(x)/τ outside [-1, 1]
RTOL = 1e-6
H = 1e-6  # central-difference step (float64)

# small configurations: (grid_size, degree) per basis
SIZES = {"FFT": (4, 3), "Cheby": (4, 4), "RSWAF": (5, 3)}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖a‖, ‖b‖), 0 when both vanish."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


def grid_for(basis, in_dim: int, grid_range=(-1.2, 1.2)):
    return basis.make_grid(np, in_dim, grid_range, np.float64) if basis.uses_grid else None


# --- the basis itself ---------------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_basis_derivatives_central_difference(name: str) -> None:
    G, k = SIZES[name]
    basis = make_basis(name, G, k)
    rng = np.random.default_rng(1)
    in_dim = 3
    x = rng.normal(scale=1.0, size=(7, 2, in_dim))  # extra leading axes, as in the prior
    grid = grid_for(basis, in_dim)
    tau = np.asarray(TAU)
    B, Bx, Bt = basis.evaluate(x, grid, tau, derivs=True)
    assert B.shape == Bx.shape == Bt.shape == x.shape + (basis.n_basis(),)
    np.testing.assert_allclose(basis.evaluate(x, grid, tau), B, rtol=0, atol=0)
    # B[..., i, :] depends on x[..., i] only, so shifting every entry at once differentiates
    # each one
    num_x = (basis.evaluate(x + H, grid, tau) - basis.evaluate(x - H, grid, tau)) / (2 * H)
    num_t = (basis.evaluate(x, grid, tau + H) - basis.evaluate(x, grid, tau - H)) / (2 * H)
    assert rel_err(Bx, num_x) < RTOL
    assert rel_err(Bt, num_t) < RTOL
    assert np.linalg.norm(Bt) > 0 and np.linalg.norm(Bx) > 0


def test_fft_values_and_layout() -> None:
    G = 6
    basis = FFT(G)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4))
    B = basis.evaluate(x, None, np.asarray(TAU))
    ang = 2 * np.pi * TAU * x[..., None] * np.arange(G + 1)
    np.testing.assert_allclose(B[..., :G + 1], np.cos(ang), atol=1e-12)  # cos block first
    np.testing.assert_allclose(B[..., G + 1:], np.sin(ang), atol=1e-12)
    assert basis.n_basis() == 2 * (G + 1)
    assert not basis.uses_grid and basis.make_grid(np, 4, (-1, 1), np.float64) is None


def test_fft_recurrence_matches_direct_in_float32() -> None:
    """The angle-addition recurrence is as accurate as direct cos/sin of g·θ (G = 50)."""
    G = 50
    rng = np.random.default_rng(3)
    x32 = (rng.normal(size=(64, 16)) * 1.5).astype(np.float32)
    t32 = np.asarray(TAU, dtype=np.float32)
    exact = FFT(G)  # direct cos/sin (the default)
    ref = exact.evaluate(x32.astype(np.float64), None, t32.astype(np.float64))
    direct = exact.evaluate(x32, None, t32)
    recur = FFT(G)
    recur.use_recurrence = True
    rec = recur.evaluate(x32, None, t32)
    assert rec.dtype == np.float32
    err_rec, err_dir = np.abs(rec - ref).max(), np.abs(direct - ref).max()
    assert err_rec < 1e-4 and err_rec <= 2 * err_dir + 1e-6
    # float64: recurrence and direct agree to rounding
    rec64 = recur.evaluate(x32.astype(np.float64), None, t32.astype(np.float64))
    assert np.abs(rec64 - ref).max() < 1e-11


def test_cheby_matches_chebval_outside_unit_interval() -> None:
    k = 6
    basis = Cheby(grid_size=5, degree=k)
    rng = np.random.default_rng(4)
    x = rng.normal(scale=1.5, size=(40, 3))
    tau = 0.7
    u = np.tanh(x) / tau
    assert (np.abs(u) > 1).any()  # the recurrence must hold where arccos would fail
    B = basis.evaluate(x, None, np.asarray(tau))
    assert B.shape == (40, 3, k + 1)
    for g in range(k + 1):
        np.testing.assert_allclose(B[..., g], chebyshev.chebval(u, np.eye(k + 1)[g]),
                                   rtol=1e-12, atol=1e-12)
    c = rng.normal(size=k + 1)
    np.testing.assert_allclose(B @ c, chebyshev.chebval(u, c), rtol=1e-12, atol=1e-12)
    assert not basis.has_base_branch and not basis.uses_grid


def test_rswaf_values() -> None:
    basis = RSWAF(grid_size=5)
    grid = grid_for(basis, 2)
    assert grid.shape == (2, 6)
    x = np.random.default_rng(5).normal(size=(9, 2))
    B = basis.evaluate(x, grid, np.asarray(TAU))
    np.testing.assert_allclose(B, 1 - np.tanh((x[..., None] - grid) / TAU) ** 2, atol=1e-14)


# --- as a KAN layer -------------------------------------------------------------------------

def make_layer(name: str, in_dim: int = 3, out_dim: int = 2, seed: int = 0) -> KANLayer:
    G, k = SIZES[name]
    be = kaem.backend.get_backend("cpu", "float64")
    spec = KANSpec(basis=name, grid_size=G, degree=k, tau_trainable=True, init_tau=TAU)
    layer = KANLayer(be, in_dim, out_dim, spec, be.rng(seed))
    rng = np.random.default_rng(seed + 100)
    for key in ("w_base", "w_sp", "coef"):  # O(1) values so every term matters
        p = layer.params[key]
        p[...] = rng.normal(size=p.shape)
    assert "tau" in layer.params and float(layer.params["tau"]) == TAU
    return layer


def check_layer_grads(layer: KANLayer, inp: np.ndarray, R: np.ndarray, fwd, bwd) -> None:
    """Compare ∂(Σ out⊙R)/∂(input, params) from ``bwd`` with central differences."""
    def loss() -> float:
        return float((fwd(inp, cache=False) * R).sum())

    layer.zero_grad()
    fwd(inp)
    d_inp = bwd(R)
    grads = {k: v.copy() for k, v in layer.grads.items()}

    def numeric(arr: np.ndarray) -> np.ndarray:
        out = np.empty(arr.shape)
        for j in np.ndindex(*arr.shape):  # in place, whatever the memory layout (coef is stored transposed)
            v = arr[j]
            arr[j] = v + H
            lp = loss()
            arr[j] = v - H
            lm = loss()
            arr[j] = v
            out[j] = (lp - lm) / (2 * H)
        return out

    assert d_inp.shape == inp.shape
    assert rel_err(d_inp, numeric(inp)) < RTOL, "input"
    for key in ("w_sp", "coef", "tau"):
        num = numeric(layer.params[key])
        assert np.linalg.norm(num) > 0, key
        assert rel_err(grads[key], num) < RTOL, key
    if layer.basis.has_base_branch:
        assert rel_err(grads["w_base"], numeric(layer.params["w_base"])) < RTOL, "w_base"
    else:  # Cheby: w_base is not used at all
        assert not grads["w_base"].any()
        assert not numeric(layer.params["w_base"]).any()


@pytest.mark.parametrize("name", NEW)
def test_generator_layer_gradients(name: str) -> None:
    layer = make_layer(name, 3, 2)
    rng = np.random.default_rng(10)
    x = rng.normal(size=(5, 3))
    R = rng.normal(size=(5, 2))
    check_layer_grads(layer, x, R, layer.forward, layer.backward)


@pytest.mark.parametrize("shared", [False, True], ids=["own-inputs", "shared-nodes"])
@pytest.mark.parametrize("name", NEW)
def test_prior_pointwise_gradients(name: str, shared: bool) -> None:
    Q, P = 3, 2  # in = P, out = Q  (f_{q,p})
    layer = make_layer(name, P, Q, seed=1)
    rng = np.random.default_rng(11)
    z = rng.normal(size=(4, 1 if shared else Q, P))
    R = rng.normal(size=(4, Q, P))
    check_layer_grads(layer, z, R, layer.forward_pointwise, layer.backward_pointwise)


def test_fft_layer_matches_spec_coefficient_layout() -> None:
    """coef (in, out, 2(G+1)) ↔ spec (2, in, out, G+1): cos block first, then sin."""
    layer = make_layer("FFT", 3, 2)
    G1 = SIZES["FFT"][0] + 1
    p = layer.params
    c_spec = p["coef"].reshape(3, 2, 2, G1).transpose(2, 0, 1, 3)  # (2, in, out, G+1)
    z = np.random.default_rng(12).normal(size=(4, 2, 3))  # (N, out, in)
    ang = 2 * np.pi * TAU * z[..., None] * np.arange(G1)  # (N, out, in, G+1)
    spl = (np.cos(ang) * c_spec[0].transpose(1, 0, 2) + np.sin(ang) * c_spec[1].transpose(1, 0, 2)).sum(-1)
    silu = z / (1 + np.exp(-z))
    expect = p["w_base"].T * silu + p["w_sp"].T * spl
    np.testing.assert_allclose(layer.forward_pointwise(z, cache=False), expect, rtol=1e-12, atol=1e-12)


# --- initialisation -----------------------------------------------------------------------------

def test_fft_init_scale() -> None:
    """coef for frequency g ~ N(0, 2/(in+out)) / (√in (g+1)²): per g, the sample std times
    √in (g+1)² / √(2/(in+out)) is 1 within 5 standard errors (SE of a std ≈ σ/√(2n))."""
    in_dim, out_dim, G = 48, 40, 7
    be = kaem.backend.get_backend("cpu", "float64")
    coef = FFT(G).init_coef(be.rng(7), np, in_dim, out_dim, None, np.asarray(1.0), 0.1, np.float64)
    assert coef.shape == (in_dim, out_dim, 2 * (G + 1))
    sigma0 = (2.0 / (in_dim + out_dim)) ** 0.5 / in_dim ** 0.5
    G1 = G + 1
    for g in range(G1):
        s = np.concatenate([coef[..., g].ravel(), coef[..., G1 + g].ravel()])  # cos and sin
        n = s.size
        ratio = s.std() * (g + 1) ** 2 / sigma0
        assert abs(ratio - 1) < 5 / np.sqrt(2 * n), (g, ratio)
        assert abs(s.mean()) * (g + 1) ** 2 / sigma0 < 5 / np.sqrt(n), g
    # the layer uses this initialisation
    layer = KANLayer(be, 4, 3, KANSpec(basis="FFT", grid_size=G), be.rng(0))
    assert layer.params["coef"].shape == (4, 3, 2 * G1) and layer.buffers["grid"] is None


def test_cheby_init_scale_and_rswaf_init() -> None:
    in_dim, out_dim, k = 40, 50, 3
    coef = Cheby(5, k).init_coef(np.random.default_rng(8), np, in_dim, out_dim, None,
                                 np.asarray(1.0), 0.1, np.float64)
    assert coef.shape == (in_dim, out_dim, k + 1)
    sigma = (2.0 / (in_dim + out_dim)) ** 0.5 / (in_dim * (k + 1))
    assert abs(coef.std() / sigma - 1) < 5 / np.sqrt(2 * coef.size)
    # RSWAF: least-squares fit of small noise at the grid points (default init)
    be = kaem.backend.get_backend("cpu", "float64")
    layer = KANLayer(be, 3, 2, KANSpec(basis="RSWAF", grid_size=6, eps_scale=0.1), be.rng(0))
    grid = layer.buffers["grid"]
    assert grid.shape == (3, 7)
    vals = np.einsum("nig,iog->nio", layer.basis.evaluate(grid.T, grid, layer.tau), layer.params["coef"])
    assert np.abs(vals).max() <= 0.5 * 0.1 / 6 + 1e-9


def test_float32_dtypes_preserved() -> None:
    be = kaem.backend.get_backend("cpu", "float32")
    for name in NEW:
        G, k = SIZES[name]
        layer = KANLayer(be, 3, 2, KANSpec(basis=name, grid_size=G, degree=k, init_tau=TAU), be.rng(0))
        assert all(v.dtype == np.float32 for v in layer.params.values()), name
        x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(y))
        assert y.dtype == dx.dtype == np.float32, name
        assert all(g.dtype == np.float32 for g in layer.grads.values()), name


# --- registry ---------------------------------------------------------------------------------

def test_registry_and_unknown_name() -> None:
    for name in NEW:
        assert name in BASES
    from kaem.config import basis_names
    assert set(NEW) <= set(basis_names())
    with pytest.raises(ValueError) as e:
        make_basis("Foo", 5)
    msg = str(e.value)
    assert "Foo" in msg
    for name in ("RBF", "B-spline", *NEW):
        assert name in msg
