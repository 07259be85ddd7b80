"""Tests for kaem/bases.py, kaem/activations.py and kaem/kan.py (method §2).

Every hand-written backward pass is checked against central differences (tests/gradcheck.py)
for EVERY registered basis (``kaem.nn.bases.BASES``) and EVERY activation
(``kaem.nn.activations.ACTIVATIONS``), so families added later are covered automatically.
float64, fixed seeds, parameters moved away from their initialisation by random values.

Non-smooth points: relu/leakyrelu/elu/selu/celu have a kink at 0, hardswish at ±3, and
B-splines are only C^{k-1} at their knots. Inputs are drawn with ``away_from`` so that every
input is ≥ 0.02 (≫ eps = 1e-6) from all of them; central differences are then exact to
O(eps²) and the 1e-6 relative tolerance is meaningful.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import BSpline as SciBSpline

from conftest import randomise_kan
from kaem.nn.activations import ACTIVATIONS, get_activation
from kaem.backend import get_backend
from kaem.nn.bases import BASES, make_basis
from kaem.nn.kan import KANLayer, KANSpec

try:
    from gradcheck import away_from, check_grad, numerical_grad, rel_error
except ImportError:  # tests/ imported as a package
    from tests.gradcheck import away_from, check_grad, numerical_grad, rel_error

BE = get_backend("cpu", "float64")
IN, OUT, N, G = 3, 4, 5, 5
LO, HI = -1.2, 1.2
KINKS = (0.0, -3.0, 3.0)  # relu-family at 0, hardswish at ±3
TOL = 1e-6

BASIS_NAMES = sorted(BASES)
ACT_NAMES = sorted(ACTIVATIONS)


def make_layer(basis: str, act: str = "silu", seed: int = 0, in_dim: int = IN, out_dim: int = OUT,
               tau_trainable: bool = True, grid_range=(LO, HI)) -> KANLayer:
    """A layer whose parameters are random and far from their (tiny) initial values."""
    spec = KANSpec(basis=basis, grid_size=G, degree=3, activation=act, grid_range=grid_range,
                   tau_trainable=tau_trainable)
    layer = KANLayer(BE, in_dim, out_dim, spec, BE.rng(seed))
    randomise_kan(layer.params, 1000 + seed, base_std=0.7)
    return layer


def bad_points(layer: KANLayer) -> list[float]:
    """Activation kinks plus every knot of the layer's grid (if the basis has one)."""
    pts = list(KINKS)
    grid = layer.buffers["grid"]
    if grid is not None:
        pts += list(np.unique(np.asarray(grid)))
    return pts


def inputs(layer: KANLayer, shape: tuple, seed: int) -> np.ndarray:
    """Inputs spread over and slightly beyond grid_range, away from kinks and knots."""
    return away_from(np.random.default_rng(seed), shape, LO - 0.2, HI + 0.2, bad_points(layer))


# ---- independent reference implementations ---------------------------------------------

def ref_basis(layer: KANLayer, x: np.ndarray) -> np.ndarray:
    """B (..., in, nb) computed from the method's formulas, not from kaem.nn.bases.

    RBF: exp(-((x - t_g)/(h·τ))²/2) on G+1 uniform knots; B-spline: scipy's B-spline
    basis elements on the uniformly extended knot vector. Bases added later fall back to
    the library's own evaluate (the layer algebra is still checked independently).
    """
    s = layer.spec
    lo, hi = s.grid_range
    h = (hi - lo) / s.grid_size
    if s.basis == "RBF":
        t = np.linspace(lo, hi, s.grid_size + 1)
        tau = float(layer.tau)
        return np.exp(-0.5 * ((x[..., None] - t) / (h * tau)) ** 2)
    if s.basis == "B-spline":
        k = s.degree
        t = lo + h * np.arange(-k, s.grid_size + k + 1)
        cols = []
        for g in range(s.grid_size + k):
            v = SciBSpline.basis_element(t[g:g + k + 2], extrapolate=False)(x)
            cols.append(np.nan_to_num(v, nan=0.0))
        return np.stack(cols, axis=-1)
    return layer.basis.evaluate(x, layer.buffers["grid"], layer.tau)


def ref_phi(layer: KANLayer, x: np.ndarray) -> np.ndarray:
    """φ_{i,o}(x[..., i]) for every (i, o): shape (..., in, out), by explicit einsum."""
    p = layer.params
    B = ref_basis(layer, x)  # (..., in, nb)
    spline = np.einsum("...ig,iog->...io", B, p["coef"]) * p["w_sp"]
    if not layer.has_base_branch:
        return spline
    b, _ = layer.act(x)
    return spline + b[..., None] * p["w_base"]


# ---- network form: y = Σ_i φ_{i,o}(x_i) -------------------------------------------------

def check_network_grads(layer, x, R, label: str) -> None:
    """Central differences of Σ forward(x)⊙R against backward: dx and every parameter."""
    def loss() -> float:
        return float((layer.forward(x, cache=False) * R).sum())

    layer.zero_grad()
    layer.forward(x)
    dx = layer.backward(R)
    check_grad(loss, x, dx, tol=TOL, name=f"{label} dx")
    for k in layer.params:
        check_grad(loss, layer.params[k], layer.grads[k], tol=TOL, name=f"{label} {k}")


@pytest.mark.parametrize("act", ACT_NAMES)
@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_network_form_gradients(basis: str, act: str) -> None:
    layer = make_layer(basis, act, seed=1)
    x = inputs(layer, (N, IN), seed=2)
    R = np.random.default_rng(3).normal(size=(N, OUT))
    check_network_grads(layer, x, R, f"{basis}/{act}")
    expected = {"w_base", "w_sp", "coef"} | ({"tau"} if layer.basis.uses_tau else set())
    assert set(layer.params) == expected


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_network_form_forward_matches_reference(basis: str) -> None:
    layer = make_layer(basis, "gelu", seed=4)
    x = inputs(layer, (7, IN), seed=5)
    want = ref_phi(layer, x).sum(axis=-2)  # Σ_i φ_{i,o}(x_i)
    assert rel_error(layer.forward(x), want) < 1e-12
    assert rel_error(layer.forward(x, cache=False), want) < 1e-12


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_backward_accumulates_and_need_dx_false(basis: str) -> None:
    layer = make_layer(basis, "silu", seed=6)
    x = inputs(layer, (N, IN), seed=7)
    R = np.random.default_rng(8).normal(size=(N, OUT))
    layer.zero_grad()
    layer.forward(x)
    layer.backward(R)
    once = {k: v.copy() for k, v in layer.grads.items()}
    assert layer.backward(R, need_dx=False) is None
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-13, atol=1e-15)
    layer.zero_grad()
    assert all(not np.any(g) for g in layer.grads.values())


def test_frozen_tau_is_a_buffer_and_other_gradients_hold() -> None:
    layer = make_layer("RBF", "tanh", seed=9, tau_trainable=False)
    assert "tau" not in layer.params and "tau" in layer.buffers
    layer.buffers["tau"][...] = 1.37
    x = inputs(layer, (N, IN), seed=10)
    R = np.random.default_rng(11).normal(size=(N, OUT))
    check_network_grads(layer, x, R, "frozen-tau")


# ---- pointwise form: f[n,o,i] = φ_{i,o}(z[n,o,i]) -----------------------------------------

@pytest.mark.parametrize("shared", [False, True], ids=["z(N,out,in)", "z(N,1,in)"])
@pytest.mark.parametrize("act", ACT_NAMES)
@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_pointwise_form_gradients(basis: str, act: str, shared: bool) -> None:
    layer = make_layer(basis, act, seed=12)
    z = inputs(layer, (N, 1 if shared else OUT, IN), seed=13)
    R = np.random.default_rng(14).normal(size=(N, OUT, IN))

    def loss() -> float:
        return float((layer.forward_pointwise(z, cache=False) * R).sum())

    layer.zero_grad()
    f = layer.forward_pointwise(z)
    assert f.shape == (N, OUT, IN)
    dz = layer.backward_pointwise(R)
    assert dz.shape == z.shape
    check_grad(loss, z, dz, tol=TOL, name=f"{basis}/{act} dz")
    for k in layer.params:
        check_grad(loss, layer.params[k], layer.grads[k], tol=TOL, name=f"{basis}/{act} {k}")


@pytest.mark.parametrize("shared", [False, True], ids=["z(N,out,in)", "z(N,1,in)"])
@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_pointwise_single_output(basis: str, shared: bool) -> None:
    """out = 1 takes the einsum path even for shared z; gradients must still hold."""
    layer = make_layer(basis, "elu", seed=15, out_dim=1)
    z = inputs(layer, (N, 1, IN), seed=16)
    R = np.random.default_rng(17).normal(size=(N, 1, IN))

    def loss() -> float:
        return float((layer.forward_pointwise(z, cache=False) * R).sum())

    layer.zero_grad()
    layer.forward_pointwise(z)
    dz = layer.backward_pointwise(R)
    check_grad(loss, z, dz, tol=TOL, name="out=1 dz")
    for k in layer.params:
        check_grad(loss, layer.params[k], layer.grads[k], tol=TOL, name=f"out=1 {k}")


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_pointwise_forward_matches_reference(basis: str) -> None:
    layer = make_layer(basis, "selu", seed=18)
    z = inputs(layer, (6, OUT, IN), seed=19)
    phi = ref_phi(layer, z)  # (N, out, in_i, out_o): every function on every input
    o = np.arange(OUT)
    want = phi[:, o, :, o].transpose(1, 0, 2)  # pick φ_{i,o}(z[n,o,i]) -> (N, out, in)
    assert rel_error(layer.forward_pointwise(z), want) < 1e-12
    # shared inputs (N, 1, in): f[n,o,i] = φ_{i,o}(z[n,0,i])
    zs = z[:, :1]
    want_s = ref_phi(layer, zs[:, 0]).transpose(0, 2, 1)  # (N, in, out) -> (N, out, in)
    assert rel_error(layer.forward_pointwise(zs), want_s) < 1e-12
    assert rel_error(layer.forward_pointwise(zs, cache=False), want_s) < 1e-12
    # and the shared form equals the broadcast (N, out, in) form
    zb = np.ascontiguousarray(np.broadcast_to(zs, (zs.shape[0], OUT, IN)))
    assert rel_error(layer.forward_pointwise(zb), want_s) < 1e-12


def test_pointwise_and_network_forms_agree() -> None:
    """Σ_i of the pointwise form on broadcast inputs is the network form."""
    for basis in BASIS_NAMES:
        layer = make_layer(basis, "silu", seed=20)
        x = inputs(layer, (N, IN), seed=21)
        f = layer.forward_pointwise(x[:, None, :])
        assert rel_error(f.sum(-1), layer.forward(x)) < 1e-12


# ---- bases -----------------------------------------------------------------------------

@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_basis_derivatives(basis: str) -> None:
    """evaluate(derivs=True) returns B unchanged, ∂B/∂x and ∂B/∂τ match central differences."""
    layer = make_layer(basis, seed=22)
    b, grid, tau = layer.basis, layer.buffers["grid"], np.asarray(1.23)
    x = inputs(layer, (4, IN), seed=23)
    B, Bx, Bt = b.evaluate(x, grid, tau, derivs=True)
    np.testing.assert_array_equal(B, b.evaluate(x, grid, tau))
    assert B.shape == (4, IN, b.n_basis()) and Bx.shape == B.shape
    eps = 1e-6
    num_x = (b.evaluate(x + eps, grid, tau) - b.evaluate(x - eps, grid, tau)) / (2 * eps)
    assert rel_error(Bx, num_x) < TOL
    if b.uses_tau:
        num_t = (b.evaluate(x, grid, tau + eps) - b.evaluate(x, grid, tau - eps)) / (2 * eps)
        assert Bt is not None and rel_error(Bt, num_t) < TOL
    else:
        assert Bt is None


def test_bspline_partition_of_unity_and_scipy() -> None:
    layer = make_layer("B-spline", seed=24)
    b, grid = layer.basis, layer.buffers["grid"]
    x = np.concatenate([np.linspace(LO, HI, 241), np.random.default_rng(25).uniform(LO, HI, 200)])
    X = np.tile(x[:, None], (1, IN))
    B, Bx, _ = b.evaluate(X, grid, layer.tau, derivs=True)
    assert B.shape[-1] == G + 3
    np.testing.assert_allclose(B.sum(-1), 1.0, atol=1e-13)  # partition of unity inside
    np.testing.assert_allclose(Bx.sum(-1), 0.0, atol=1e-11)  # so the derivatives sum to 0
    assert B.min() >= -1e-15
    # local support: at most k+1 = 4 non-zero functions at any point
    assert ((B > 1e-15).sum(-1) <= 4).all()
    # independent check against scipy's Cox–de Boor
    assert rel_error(B, ref_basis(layer, X)) < 1e-12
    # far outside the extended grid every basis is zero
    far = np.full((2, IN), 10.0)
    assert not np.any(b.evaluate(far, grid, layer.tau))


def test_bspline_grid_extension() -> None:
    layer = make_layer("B-spline", seed=26)
    grid = layer.buffers["grid"]
    h = (HI - LO) / G
    assert grid.shape == (IN, G + 1 + 2 * 3)
    np.testing.assert_allclose(grid[0], LO + h * np.arange(-3, G + 4), atol=1e-14)
    np.testing.assert_allclose(layer.basis.interior(grid)[0], np.linspace(LO, HI, G + 1), atol=1e-14)


def test_rbf_peaks_at_knots() -> None:
    layer = make_layer("RBF", seed=27)
    b, grid = layer.basis, layer.buffers["grid"]
    knots = np.linspace(LO, HI, G + 1)
    np.testing.assert_allclose(grid[0], knots, atol=1e-14)
    tau = np.asarray(1.3)
    X = np.tile(knots[:, None], (1, IN))  # x = t_g in every input column
    B = b.evaluate(X, grid, tau)  # (G+1, in, G+1)
    for i in range(IN):
        np.testing.assert_allclose(np.diag(B[:, i, :]), 1.0, rtol=0, atol=1e-15)
        assert (np.argmax(B[:, i, :], axis=1) == np.arange(G + 1)).all()
    # each bump is maximal at its own knot and has width h·τ: B_g(t_g ± h·τ) = e^{-1/2}
    x = np.linspace(LO - 0.5, HI + 0.5, 2001)
    Bf = b.evaluate(np.tile(x[:, None], (1, IN)), grid, tau)
    h = (HI - LO) / G
    for g in range(G + 1):
        assert abs(x[np.argmax(Bf[:, 0, g])] - knots[g]) <= (x[1] - x[0])
    side = b.evaluate(np.tile((knots + h * 1.3)[:, None], (1, IN)), grid, tau)
    np.testing.assert_allclose(np.diag(side[:, 0, :]), np.exp(-0.5), rtol=1e-13)


def test_make_basis_unknown_name_lists_valid() -> None:
    with pytest.raises(ValueError) as info:
        make_basis("no-such-basis", 5)
    msg = str(info.value)
    assert "no-such-basis" in msg
    for name in BASES:
        assert name in msg


@pytest.mark.parametrize("basis", BASIS_NAMES)
def test_make_basis_registered(basis: str) -> None:
    b = make_basis(basis, G, 3)
    assert b.n_basis() > 0
    layer = make_layer(basis, seed=28)
    assert layer.params["coef"].shape == (IN, OUT, b.n_basis())


# ---- activations -----------------------------------------------------------------------

_SIG = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
_REF_ACT = {
    "silu": lambda x: x * _SIG(x),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
    "relu": lambda x: np.maximum(x, 0),
    "leakyrelu": lambda x: np.where(x > 0, x, 0.01 * x),
    "tanh": np.tanh,
    "sigmoid": _SIG,
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
    "celu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "hardswish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "none": lambda x: x,
}


@pytest.mark.parametrize("act", ACT_NAMES)
def test_activation_derivative(act: str) -> None:
    # ≥ 0.02 from the kinks at 0 (relu family) and ±3 (hardswish)
    x = away_from(np.random.default_rng(29), (400,), -5.0, 5.0, KINKS)
    fn = get_activation(act)
    v, d = fn(x)
    assert v.shape == d.shape == x.shape and v.dtype == d.dtype == np.float64
    eps = 1e-6
    num = (fn(x + eps)[0] - fn(x - eps)[0]) / (2 * eps)
    assert rel_error(d, num) < TOL, act
    if act in _REF_ACT:
        np.testing.assert_allclose(v, _REF_ACT[act](x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", ACT_NAMES)
def test_activation_extreme_inputs_finite(act: str) -> None:
    x = np.array([-800.0, -40.0, 40.0, 800.0])
    with np.errstate(over="raise", invalid="raise"):
        v, d = get_activation(act)(x)
    assert np.isfinite(v).all() and np.isfinite(d).all()


def test_base_activation_none_drops_the_branch_and_identity_keeps_it() -> None:
    """As the reference: base_activation = none means no w_base·b(x) term (w_base gets no
    gradient); identity is the linear branch w_base·x."""
    x = away_from(np.random.default_rng(31), (N, IN), LO, HI, [])
    none, ident = make_layer("RBF", "none", seed=3), make_layer("RBF", "identity", seed=3)
    assert not none.has_base_branch and ident.has_base_branch
    spline = np.einsum("nig,iog->no", ref_basis(none, x), none.params["coef"] * none.params["w_sp"][..., None])
    np.testing.assert_allclose(none.forward(x, cache=False), spline, rtol=1e-12)
    np.testing.assert_allclose(ident.forward(x, cache=False), spline + x @ ident.params["w_base"], rtol=1e-12)
    none.forward(x)
    none.backward(np.ones((N, OUT)))
    assert not none.grads["w_base"].any()


def test_get_activation_unknown_name() -> None:
    with pytest.raises(ValueError) as info:
        get_activation("nope")
    for name in ACTIVATIONS:
        assert name in str(info.value)


def test_numerical_grad_helper() -> None:
    """The checker itself: exact on a known function, restores the array."""
    a = np.random.default_rng(30).normal(size=(3, 2))
    keep = a.copy()
    g = numerical_grad(lambda: float((np.sin(a) * a).sum()), a)
    np.testing.assert_array_equal(a, keep)
    assert rel_error(g, np.cos(a) * a + np.sin(a)) < 1e-9
    t = np.asarray(0.7)
    assert abs(numerical_grad(lambda: float(t ** 3), t)[()] - 3 * 0.49) < 1e-8
