"""Darcy flow, generated here (the FNO benchmark recipe, Li et al. 2020).

For each sample:

1. a Gaussian random field g on [0, 1]² with covariance C = (−Δ + τ² I)^−α, τ = 3, α = 2,
   Δ the Laplacian with zero Neumann boundary conditions, drawn from its Karhunen–Loève
   expansion in the Neumann eigenfunctions φ_k(x) = c_k1 c_k2 cos(π k1 x1) cos(π k2 x2)
   (c_0 = 1, c_k = √2; orthonormal), eigenvalues λ_k = (π²|k|² + τ²)^−α:

       g(x) = Σ_k √λ_k ξ_k φ_k(x),   ξ_k ~ N(0, 1),   k1, k2 = 0 .. R+1, k ≠ (0, 0)

   summed by one type-I DCT (scipy.fft) on the nodes x_m = m/(R+1), m = 0..R+1. As in the
   FNO generator, the constant mode k = 0 is left out (the field has spatial mean zero):
   with it, λ_0 = τ^−2α would carry more variance than all other modes together and many
   samples would be nearly all one phase;
2. the permeability a = 12 where g > 0, else 3, at the R × R interior nodes x_i = i/(R+1);
3. the solution u of −∇·(a∇u) = f, f = 1, u = 0 on the boundary: 5-point finite
   differences on the same nodes, h = 1/(R+1),

       (1/h²) Σ_{faces e of node i} a_e (u_i − u_nb(e)) = f_i,

   a face between two interior nodes taking the harmonic mean 2 a_i a_j / (a_i + a_j), a
   boundary face the interior node's value a_i (u_nb = 0 there). The matrix is symmetric
   and an M-matrix (discrete maximum principle); scipy.sparse solves it directly.

``make_darcy`` writes ``<data_dir>/darcy/darcy_r{R}_n{N}_s{seed}.npz`` (float32 ``a`` and
unscaled ``u``, both (N, R, R), axis 1 along x1 and axis 2 along x2) atomically. Samples
are drawn in blocks of ``BLOCK`` from a stream seeded by (seed, block), so the file depends
only on (R, seed, N) and a smaller N gives a prefix of a larger one.

``--dataset darcy`` uses the default file (R = 32, or ``resize``; N = 1 100; seed 0),
generated on first use: the first 1 000 fields train, the last 100 test. The model sees u
min–max scaled to [0, 1] with the training split's minimum and maximum (test fields may
stray slightly outside); ``dataset_info`` returns that scaling for the checkpoint.
"""
from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

import numpy as np

from kaem.run.atomic import atomic_open
from kaem.datasets.base import DatasetError, Progress, check_count, check_n, check_resize, check_split, progress

DATASETS: tuple[str, ...] = ("darcy",)
NATIVE_RESIZE = True  # resize = the resolution the fields are generated at
TAU, ALPHA = 3.0, 2.0  # GRF covariance (−Δ + τ² I)^−α
A_HIGH, A_LOW = 12.0, 3.0  # permeability where the field is positive / not
BLOCK = 100  # samples per random stream and per sparse solve
DEFAULT_RESOLUTION, DEFAULT_N, DEFAULT_SEED, N_TEST = 32, 1100, 0, 100
FORMAT, VERSION = "kaem-darcy", 1


def dataset_shape(name: str, resize: int | None = None) -> tuple[int, int, int]:
    """Image shape ``(C, H, W)``: (1, R, R), R = ``resize`` or 32."""
    side = resize or DEFAULT_RESOLUTION
    return (1, side, side)


# --------------------------------------------------------------------------- random field


def grf_eigenvalues(R: int) -> np.ndarray:
    """λ_k = (π²(k1² + k2²) + τ²)^−α for k1, k2 = 0..R+1, with λ_0 = 0 (mean mode left out);
    shape (R+2, R+2)."""
    k = np.arange(R + 2)
    lam = (np.pi ** 2 * (k[:, None] ** 2 + k[None, :] ** 2) + TAU ** 2) ** -ALPHA
    lam[0, 0] = 0.0
    return lam


def grf_from_normals(xi: np.ndarray) -> np.ndarray:
    """g on the (R+2)² nodes m/(R+1) from standard normals ξ (n, R+2, R+2): float64, same shape.

    g[m1, m2] = Σ_k √λ_k c_k1 c_k2 ξ_k cos(π k1 m1/(R+1)) cos(π k2 m2/(R+1)). scipy's DCT-I
    of length K = R+2 computes y_m = x_0 + (−1)^m x_{K−1} + 2 Σ_{0<k<K−1} x_k cos(πkm/(K−1)),
    so the inner coefficients enter halved.
    """
    from scipy.fft import dctn

    K = xi.shape[-1]
    c = np.full(K, np.sqrt(2.0))
    c[0] = 1.0
    half = np.full(K, 0.5)
    half[[0, -1]] = 1.0
    w = c * half  # per axis: orthonormalisation times the DCT-I weight
    coef = xi * np.sqrt(grf_eigenvalues(K - 2)) * w[:, None] * w[None, :]
    return dctn(coef, type=1, axes=(-2, -1))


def permeability(g: np.ndarray) -> np.ndarray:
    """a = 12 where g > 0 else 3, at the interior nodes: (n, R+2, R+2) -> (n, R, R)."""
    return np.where(g[:, 1:-1, 1:-1] > 0, A_HIGH, A_LOW)


# --------------------------------------------------------------------------- solver


def harmonic_mean(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return 2.0 * p * q / (p + q)


def darcy_matrix(a: np.ndarray) -> Any:
    """The 5-point operator of −∇·(a∇u) with u = 0 on the boundary for a batch of
    permeabilities a (n, R, R): block-diagonal scipy.sparse CSC matrix (n·R², n·R²), unknown
    (s, i, j) at row s·R² + i·R + j. Face coefficients: module doc."""
    import scipy.sparse as sp

    n, R, _ = a.shape
    ax = harmonic_mean(a[:, :-1, :], a[:, 1:, :])  # faces between (i, j) and (i+1, j)
    ay = harmonic_mean(a[:, :, :-1], a[:, :, 1:])  # faces between (i, j) and (i, j+1)
    diag = np.zeros_like(a)
    diag[:, :-1, :] += ax
    diag[:, 1:, :] += ax
    diag[:, :, :-1] += ay
    diag[:, :, 1:] += ay
    for edge in (np.s_[:, 0, :], np.s_[:, -1, :], np.s_[:, :, 0], np.s_[:, :, -1]):
        diag[edge] += a[edge]  # boundary faces: the interior node's value
    idx = np.arange(n * R * R).reshape(n, R, R)
    rows = [idx, idx[:, :-1], idx[:, 1:], idx[:, :, :-1], idx[:, :, 1:]]
    cols = [idx, idx[:, 1:], idx[:, :-1], idx[:, :, 1:], idx[:, :, :-1]]
    vals = [diag, -ax, -ax, -ay, -ay]
    h2 = (1.0 / (R + 1)) ** 2
    return sp.csc_matrix((np.concatenate([v.ravel() for v in vals]) / h2,
                          (np.concatenate([r.ravel() for r in rows]), np.concatenate([c.ravel() for c in cols]))),
                         shape=(n * R * R, n * R * R))


def solve_darcy(a: np.ndarray, f: np.ndarray | float = 1.0) -> np.ndarray:
    """u (n, R, R) solving −∇·(a∇u) = f, u = 0 on the boundary, for a (n, R, R) > 0 and f
    (n, R, R) or a constant: one sparse direct solve for the whole batch (float64)."""
    from scipy.sparse.linalg import spsolve

    a = np.asarray(a, np.float64)
    rhs = np.broadcast_to(np.asarray(f, np.float64), a.shape).ravel()
    return spsolve(darcy_matrix(a), rhs, permc_spec="MMD_AT_PLUS_A").reshape(a.shape)


# --------------------------------------------------------------------------- generation


def generate(n: int, R: int, seed: int, report: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n samples (a, u) at resolution R, float32 (n, R, R) each; block b of BLOCK samples
    draws from the stream seeded by (seed, b)."""
    a_out = np.empty((n, R, R), np.float32)
    u_out = np.empty((n, R, R), np.float32)
    for b, start in enumerate(range(0, n, BLOCK)):
        m = min(BLOCK, n - start)
        xi = np.random.default_rng([seed, b]).standard_normal((m, R + 2, R + 2))
        a = permeability(grf_from_normals(xi))
        a_out[start:start + m] = a
        u_out[start:start + m] = solve_darcy(a)
        if report:
            report(start + m, n, final=start + m == n)
    return a_out, u_out


def file_name(R: int, n: int, seed: int) -> str:
    return f"darcy_r{R}_n{n}_s{seed}.npz"


def make_darcy(n: int, R: int, seed: int, data_dir: str | os.PathLike = "data") -> pathlib.Path:
    """Generate and write ``<data_dir>/darcy/darcy_r{R}_n{n}_s{seed}.npz`` atomically (an
    interrupted run leaves nothing); an existing file is kept. Returns its path."""
    for what, v, least in (("n", n, 1), ("resolution", R, 2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise DatasetError(f"darcy {what} must be an integer >= {least}, got {v!r}")
    path = pathlib.Path(data_dir) / "darcy" / file_name(R, n, seed)
    if path.exists():
        return path
    sys.stderr.write(f"generating {n} Darcy flow samples at {R}x{R} (seed {seed}) into {path}\n")
    a, u = generate(n, R, seed, progress("darcy", "samples", 1))
    with atomic_open(str(path), "wb", suffix=".npz") as fh:
        np.savez(fh, format=np.array(FORMAT), version=np.array(VERSION), a=a, u=u,
                 resolution=np.array(R), seed=np.array(seed),
                 grf=np.array([TAU, ALPHA]), permeability_values=np.array([A_HIGH, A_LOW]))
    return path


def read_darcy(path: pathlib.Path) -> dict[str, np.ndarray]:
    """The arrays of a file written by ``make_darcy``, checked; else a DatasetError."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path} is truncated or corrupt ({exc}); delete it to regenerate it") from None
    if str(data.get("format", "")) != FORMAT:
        raise DatasetError(f"{path} is not a Darcy file written by make-darcy (no '{FORMAT}' tag); "
                           "move it away to regenerate it")
    a, u = data.get("a"), data.get("u")
    if a is None or u is None or a.ndim != 3 or a.shape != u.shape or a.shape[1] != a.shape[2]:
        raise DatasetError(f"{path} lacks a and u arrays of one shape (N, R, R); delete it to regenerate it")
    if not np.isfinite(u).all():
        raise DatasetError(f"{path} holds non-finite u values; delete it to regenerate it")
    return data


# --------------------------------------------------------------------------- the dataset


def _default_file(data_dir: str | os.PathLike, resize: int | None) -> dict[str, np.ndarray]:
    """The default file's arrays (generated on first use)."""
    check_resize(resize)
    R = resize or DEFAULT_RESOLUTION
    path = make_darcy(DEFAULT_N, R, DEFAULT_SEED, data_dir)
    data = read_darcy(path)
    if data["u"].shape != (DEFAULT_N, R, R):
        raise DatasetError(f"{path} holds fields of shape {data['u'].shape}, expected {(DEFAULT_N, R, R)}; "
                           "delete it to regenerate it")
    return data


def _split(u: np.ndarray, split: str) -> np.ndarray:
    return u[:-N_TEST] if split == "train" else u[-N_TEST:]


def dataset_info(name: str, data_dir: str | os.PathLike = "data", resize: int | None = None) -> dict[str, Any]:
    """The scaling the model's data went through: u_min, u_max of the training split (so
    that u = u_min + x (u_max − u_min)), and the file."""
    R = resize or DEFAULT_RESOLUTION
    train = _split(_default_file(data_dir, resize)["u"], "train")
    return {"file": file_name(R, DEFAULT_N, DEFAULT_SEED), "u_min": float(train.min()), "u_max": float(train.max())}


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike = "data",
                 download: bool = True, n: int | None = None, resize: int | None = None) -> np.ndarray:
    """Fields u of darcy/``split`` as host float32 (N, 1, R, R), min–max scaled with the
    training split's range; ``n`` keeps the first n. ``download`` is accepted for the common
    interface: the data are generated, never downloaded."""
    check_split(split)
    check_n(n)
    u = _default_file(data_dir, resize)["u"]
    train = _split(u, "train")
    lo, hi = float(train.min()), float(train.max())
    x = _split(u, split)
    x = x[:check_count(n, x.shape[0], f"darcy {split}")]
    return ((x - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)[:, None]
