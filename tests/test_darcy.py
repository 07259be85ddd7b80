"""Darcy flow (kaem/datasets/darcy.py): the finite-difference solver against closed-form
solutions, its symmetry and maximum principle, the Gaussian random field's spectrum, and the
generated dataset (determinism, files, scaling, errors)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import scipy.sparse

from kaem import datasets
from kaem.datasets import DatasetError, darcy


def nodes(R):
    return np.arange(1, R + 1) / (R + 1)


# --------------------------------------------------------------------------- solver


def manufactured(R):
    """a = 1 + x² + y/2 (smooth), u* = sin(πx) sin(2πy) (zero on the boundary), f = −∇·(a∇u*)."""
    x, y = np.meshgrid(nodes(R), nodes(R), indexing="ij")
    a = 1 + x ** 2 + 0.5 * y
    s1, c1, s2, c2 = np.sin(np.pi * x), np.cos(np.pi * x), np.sin(2 * np.pi * y), np.cos(2 * np.pi * y)
    u = s1 * s2
    ux, uy = np.pi * c1 * s2, 2 * np.pi * s1 * c2
    lap = -(np.pi ** 2 + 4 * np.pi ** 2) * u
    f = -(2 * x * ux + 0.5 * uy + a * lap)
    return a[None], f[None], u


def test_manufactured_solution_converges_at_second_order():
    errs = []
    for R in (15, 31, 63):
        a, f, u_exact = manufactured(R)
        errs.append(np.abs(darcy.solve_darcy(a, f)[0] - u_exact).max())
    orders = [math.log2(e0 / e1) for e0, e1 in zip(errs, errs[1:])]
    assert all(1.9 < p < 2.1 for p in orders), (errs, orders)
    assert errs[-1] < 1e-3


def poisson_series(R, c, terms=401):
    """u for −c Δu = 1 on the unit square, u = 0 on the boundary: the double sine series
    (16 / (c π⁴)) Σ_{m,n odd} sin(mπx) sin(nπy) / (m n (m² + n²))."""
    k = np.arange(1, terms + 1, 2)
    S = np.sin(np.pi * np.outer(nodes(R), k))  # (R, K)
    coef = 16 / (c * np.pi ** 4 * np.outer(k, k) * (k[:, None] ** 2 + k[None, :] ** 2))
    return S @ coef @ S.T


def test_constant_permeability_matches_the_poisson_series():
    c = 3.0
    errs = []
    for R in (15, 31, 63):
        u = darcy.solve_darcy(np.full((1, R, R), c))[0]
        errs.append(np.abs(u - poisson_series(R, c)).max())
    assert errs[-1] < 1e-5  # u_max ≈ 0.0737 / c = 0.025
    assert all(3.8 < e0 / e1 < 4.2 for e0, e1 in zip(errs, errs[1:])), errs  # O(h²)


def test_constant_permeability_equals_the_discrete_sine_solution():
    """Exactly (to rounding): the 5-point Laplacian's eigenvectors are sin(mπx_i) sin(nπy_j),
    eigenvalues (4/h²)(sin²(mπh/2) + sin²(nπh/2))."""
    R, c = 15, 12.0
    h = 1 / (R + 1)
    m = np.arange(1, R + 1)
    S = np.sin(np.pi * np.outer(nodes(R), m))  # S S = (R+1)/2 I
    lam = 4 / h ** 2 * (np.sin(m * np.pi * h / 2)[:, None] ** 2 + np.sin(m * np.pi * h / 2)[None, :] ** 2)
    f = np.random.default_rng(0).uniform(0.5, 1.5, (R, R))
    fhat = S @ f @ S * (2 / (R + 1)) ** 2
    u = S @ (fhat / (c * lam)) @ S
    np.testing.assert_allclose(darcy.solve_darcy(np.full((1, R, R), c), f[None])[0], u, rtol=1e-10, atol=1e-14)


@pytest.fixture(scope="module")
def random_a():
    return darcy.permeability(darcy.grf_from_normals(np.random.default_rng(3).standard_normal((3, 22, 22))))


def test_operator_is_a_symmetric_m_matrix(random_a):
    A = darcy.darcy_matrix(random_a).tocsr()
    assert abs(A - A.T).max() == 0
    d = A.diagonal()
    off = A - scipy.sparse.diags(d)
    assert (d > 0).all() and off.max() <= 0
    rowsum = np.asarray(A.sum(axis=1)).ravel().reshape(random_a.shape)
    assert (rowsum >= -1e-9 * d.max()).all()
    interior = rowsum[:, 1:-1, 1:-1]
    assert np.abs(interior).max() < 1e-9 * d.max()  # only boundary faces make rows dominant
    assert (rowsum[:, 0, :] > 0).all() and (rowsum[:, :, -1] > 0).all()


def test_solution_follows_the_symmetries_of_the_permeability(random_a):
    u = darcy.solve_darcy(random_a)
    for op in (lambda v: v.transpose(0, 2, 1), lambda v: v[:, ::-1, :], lambda v: v[:, :, ::-1],
               lambda v: np.rot90(v, axes=(1, 2))):
        np.testing.assert_allclose(darcy.solve_darcy(op(random_a).copy()), op(u), rtol=1e-10, atol=1e-14)
    sym = np.maximum(random_a, random_a.transpose(0, 2, 1))
    us = darcy.solve_darcy(sym)
    np.testing.assert_allclose(us, us.transpose(0, 2, 1), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(darcy.solve_darcy(2.5 * random_a), u / 2.5, rtol=1e-10)  # linear in 1/a


def test_maximum_principle(random_a):
    """A⁻¹ > 0 entrywise: each unit source gives a strictly positive solution, so u > 0 for
    f = 1, f ≥ f' implies u ≥ u', and u is largest where the source is."""
    R = random_a.shape[1]
    rng = np.random.default_rng(1)
    a = random_a[:1]
    u1 = darcy.solve_darcy(a)
    assert (u1 > 0).all()
    for i, j in ((0, 0), (R // 2, 3), (R - 1, R - 1)):
        f = np.zeros((1, R, R))
        f[0, i, j] = 1.0
        g = darcy.solve_darcy(a, f)[0]
        assert (g > 0).all() and g.argmax() == i * R + j
    f1 = rng.uniform(0, 1, (1, R, R))
    f2 = f1 - rng.uniform(0, 0.5, (1, R, R))
    assert (darcy.solve_darcy(a, f1) >= darcy.solve_darcy(a, f2)).all()


def test_compliance_lies_between_the_constant_permeabilities(random_a):
    """3 ≤ a ≤ 12 makes every face coefficient lie in [3, 12], so A_12 ⪰ A_a ⪰ A_3 and the
    compliance Σ f u = fᵀA⁻¹f is bracketed by the constant-coefficient problems."""
    J = darcy.solve_darcy(random_a).sum(axis=(1, 2))
    lo = darcy.solve_darcy(np.full_like(random_a, darcy.A_HIGH)).sum(axis=(1, 2))
    hi = darcy.solve_darcy(np.full_like(random_a, darcy.A_LOW)).sum(axis=(1, 2))
    assert (lo < J).all() and (J < hi).all()


# --------------------------------------------------------------------------- random field


def test_grf_recovers_its_karhunen_loeve_coefficients():
    """Projecting a field back onto the cosine eigenfunctions (an explicit matrix inverse,
    not scipy.fft) returns √λ_k c_k ξ_k exactly, with no constant mode."""
    R = 14
    K = R + 2
    xi = np.random.default_rng(2).standard_normal((2, K, K))
    g = darcy.grf_from_normals(xi)
    C = np.cos(np.pi * np.outer(np.arange(K), np.arange(K)) / (K - 1))  # C[m, k] = cos(π k x_m)
    coef = np.linalg.solve(C, np.linalg.solve(C, g).transpose(0, 2, 1)).transpose(0, 2, 1)
    c = np.where(np.arange(K) == 0, 1.0, math.sqrt(2))
    expect = xi * np.sqrt(darcy.grf_eigenvalues(R)) * np.outer(c, c)
    np.testing.assert_allclose(coef, expect, atol=1e-12)
    assert darcy.grf_eigenvalues(R)[0, 0] == 0


def test_grf_empirical_spectrum_matches_its_covariance():
    """M fields from the generator's own stream: the mean power of each radial band of modes,
    divided by λ_k, is 1 within 5 standard errors (χ² with M·(modes in band) degrees of
    freedom); the pointwise variance matches Σ_k λ_k φ_k(x)² the same way."""
    R, M = 14, 4000
    K = R + 2
    g = darcy.grf_from_normals(np.random.default_rng(5).standard_normal((M, K, K)))
    C = np.cos(np.pi * np.outer(np.arange(K), np.arange(K)) / (K - 1))
    coef = np.linalg.solve(C, np.linalg.solve(C, g).transpose(0, 2, 1)).transpose(0, 2, 1)
    c = np.where(np.arange(K) == 0, 1.0, math.sqrt(2))
    lam = darcy.grf_eigenvalues(R)
    k = np.arange(K)
    radius = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    power = (coef ** 2).mean(axis=0) / np.outer(c, c) ** 2
    for lo, hi in ((0.5, 2), (2, 4), (4, 8), (8, 16), (16, 23)):
        band = (radius >= lo) & (radius < hi)
        ratio = (power[band] / lam[band]).mean()
        assert abs(ratio - 1) < 5 * math.sqrt(2 / (M * band.sum())), (lo, hi, ratio)
    assert abs(coef[:, 0, 0]).max() < 1e-12  # no constant mode
    m = np.array([0, 5, K - 1])
    phi2 = (np.outer(c, c)[None] * np.cos(np.pi * np.outer(m, k) / (K - 1))[:, :, None]
            * np.cos(np.pi * np.outer(m, k) / (K - 1))[:, None, :]) ** 2  # (3 points on the diagonal, K, K)
    var_theory = (lam[None] * phi2).sum(axis=(1, 2))
    var_emp = (g[:, m, m] ** 2).mean(axis=0)
    assert np.all(np.abs(var_emp / var_theory - 1) < 5 * math.sqrt(2 / M)), (var_emp, var_theory)


# --------------------------------------------------------------------------- generated data


def test_generation_is_deterministic_and_prefix_stable():
    a1, u1 = darcy.generate(130, 10, seed=7)
    a2, u2 = darcy.generate(130, 10, seed=7)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(u1, u2)
    a3, u3 = darcy.generate(105, 10, seed=7)  # crosses a block boundary
    np.testing.assert_array_equal(a3, a1[:105])
    np.testing.assert_array_equal(u3, u1[:105])
    a4, _ = darcy.generate(20, 10, seed=8)
    assert not np.array_equal(a4, a1[:20])
    assert a1.dtype == u1.dtype == np.float32 and a1.shape == (130, 10, 10)
    assert set(np.unique(a1)) == {3.0, 12.0} and (u1 > 0).all()
    assert 0.3 < (a1 == 12).mean() < 0.7  # a zero-mean field: both phases, about equally


@pytest.fixture
def small_default(monkeypatch):
    """The default dataset shrunk to 60 fields (50 train / 10 test) for speed."""
    monkeypatch.setattr(darcy, "DEFAULT_N", 60)
    monkeypatch.setattr(darcy, "N_TEST", 10)


def test_make_darcy_writes_one_file_atomically(tmp_path):
    path = darcy.make_darcy(12, 8, 3, tmp_path)
    assert path == tmp_path / "darcy" / "darcy_r8_n12_s3.npz"
    data = darcy.read_darcy(path)
    assert data["a"].shape == data["u"].shape == (12, 8, 8) and data["u"].dtype == np.float32
    a, u = darcy.generate(12, 8, 3)
    np.testing.assert_array_equal(data["u"], u)
    assert sorted(p.name for p in (tmp_path / "darcy").iterdir()) == [path.name]
    mtime = path.stat().st_mtime_ns
    assert darcy.make_darcy(12, 8, 3, tmp_path) == path and path.stat().st_mtime_ns == mtime  # kept


def test_dataset_generated_on_first_use_and_scaled(tmp_path, small_default, capsys):
    train = datasets.load_dataset("darcy", "train", tmp_path, resize=8)
    assert "generating 60 Darcy flow samples" in capsys.readouterr().err
    test = datasets.load_dataset("darcy", "test", tmp_path, resize=8)
    assert train.shape == (50, 1, 8, 8) and test.shape == (10, 1, 8, 8) and train.dtype == np.float32
    assert train.min() == 0.0 and train.max() == 1.0
    info = datasets.dataset_info("darcy", tmp_path, resize=8)
    u = darcy.read_darcy(tmp_path / "darcy" / info["file"])["u"]
    np.testing.assert_allclose(test[:, 0], (u[-10:] - info["u_min"]) / (info["u_max"] - info["u_min"]), rtol=1e-6)
    assert info["resize"] == 8 and info["u_min"] == float(u[:50].min())
    assert datasets.load_dataset("darcy", "train", tmp_path, n=3, resize=8).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated or corrupt"),
    (lambda p: np.savez(p, weights=np.ones(3)), "not a Darcy file"),
])
def test_corrupt_or_foreign_file_is_an_error_and_kept(tmp_path, small_default, damage, why):
    path = darcy.make_darcy(darcy.DEFAULT_N, 8, darcy.DEFAULT_SEED, tmp_path)
    damage(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match=why):
        datasets.load_dataset("darcy", "train", tmp_path, resize=8)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
