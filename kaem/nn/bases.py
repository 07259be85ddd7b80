"""Univariate basis families for KAN functions (method §2).

A basis is one self-contained definition: how many functions it has, its grid (if any),
its values and its derivatives with respect to the input x and the scale tau. The KAN
layer (``kaem/kan.py``) never looks inside a basis, so a new family is one class plus one
``register`` call.

Shapes: ``x`` is ``(..., in)``; ``grid`` is ``(in, n_knots)`` (one row per input
dimension, ``None`` for grid-free bases); ``tau`` is a 0-d array. ``evaluate`` returns
``B`` of shape ``(..., in, nb)`` and, with ``derivs=True``, also ``dB/dx`` (same shape)
and ``dB/dtau`` (same shape; ``None`` when tau is not used or ``dtau=False``, which spares
the work when tau is frozen or only x-derivatives are wanted). Faster forms of the RBF
prior's sums live in ``kaem/kernels/rbf.py``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable

from kaem.backend import array_module
from kaem.numerics import lstsq_batched


class Basis(ABC):
    """Interface of a basis family; subclasses define ``n_basis`` and ``evaluate`` and
    override the rest where they differ."""

    name: str = ""
    uses_grid: bool = True  # grid-free bases are skipped by grid updating
    uses_tau: bool = True  # B-spline ignores tau; its gradient is never formed
    has_base_branch: bool = True  # Chebyshev (as the reference) drops w_base * b(x)

    def __init__(self, grid_size: int, degree: int = 3) -> None:
        self.G = int(grid_size)
        self.k = int(degree)

    @abstractmethod
    def n_basis(self) -> int:
        """Number of basis functions nb per input."""

    def make_grid(self, xp: Any, in_dim: int, grid_range: tuple[float, float], dtype: Any) -> Any:
        """Knots (in, n_knots): G+1 uniform points on ``grid_range`` (plus any extension)."""
        lo, hi = grid_range
        pts = xp.linspace(lo, hi, self.G + 1, dtype=dtype)
        return xp.tile(pts[None, :], (in_dim, 1))

    def interior(self, grid: Any) -> Any:
        """The G+1 grid points (in, G+1) that span the domain, without extension."""
        return grid

    def grid_from_points(self, points: Any) -> Any:
        """Knots (in, n_knots) from G+1 (possibly non-uniform) points per input: the inverse
        of ``interior``, used by grid updating."""
        return points

    @abstractmethod
    def evaluate(self, x: Any, grid: Any, tau: Any, derivs: bool = False, dtau: bool = True) -> Any:
        """B (..., in, nb); with ``derivs`` the tuple (B, dB/dx, dB/dtau or None)."""

    def evaluate_cached(self, x: Any, grid: Any, tau: Any) -> tuple[Any, Any]:
        """B = evaluate(x) and ``aux``: what ``backward`` and ``dtau`` can reuse from computing
        it (None here), for a caller that keeps both between forward and backward."""
        return self.evaluate(x, grid, tau), None

    def backward(self, dB: Any, x: Any, B: Any, grid: Any, tau: Any, need_dx: bool = True,
                 need_dtau: bool = True, aux: Any = None) -> tuple[Any, Any]:
        """The chain rule through the basis, given ∂L/∂B (..., in, nb) and the forward's x and
        B = evaluate(x) (and ``aux`` from ``evaluate_cached``, or None):
        dx[..., i] = Σ_g ∂L/∂B_g ∂B_g/∂x (or None) and the 0-d dτ = Σ ∂L/∂B ∂B/∂τ (or None).
        Generic form: derivatives from ``evaluate``."""
        _, Bx, Bt = self.evaluate(x, grid, tau, derivs=True, dtau=need_dtau and self.uses_tau)
        dx = (dB * Bx).sum(-1) if need_dx else None
        dtau = (dB * Bt).sum() if need_dtau and Bt is not None else None
        return dx, dtau

    def dtau(self, x: Any, B: Any, grid: Any, tau: Any, aux: Any = None) -> Any:
        """∂B/∂τ (..., in, nb) at the forward's x, B = evaluate(x) (``aux`` as in ``backward``)."""
        return self.evaluate(x, grid, tau, derivs=True)[2]

    def init_coef(self, rng: Any, xp: Any, in_dim: int, out_dim: int, grid: Any, tau: Any,
                  eps_scale: float, dtype: Any) -> Any:
        """Coefficients (in, out, nb): least-squares fit of U(-0.5, 0.5)·eps_scale/G noise
        at the grid points (the reference's initialisation)."""
        pts = self.interior(grid).T  # (G+1, in)
        noise = (rng.random((pts.shape[0], in_dim, out_dim), dtype=dtype) - 0.5) * eps_scale / self.G
        return fit_coef(self, pts, noise, grid, tau)


def fit_coef(basis: Basis, x: Any, y: Any, grid: Any, tau: Any) -> Any:
    """Least squares coefficients c (in, out, nb) with Σ_g c[i,o,g] B_g(x[n,i]) ≈ y[n,i,o].

    x: (N, in); y: (N, in, out). One least-squares problem per input dimension, batched.
    """
    xp = array_module(x)
    A = xp.transpose(basis.evaluate(x, grid, tau), (1, 0, 2))  # (in, N, nb)
    c = lstsq_batched(A, xp.transpose(y, (1, 0, 2)))  # (in, nb, out)
    return xp.ascontiguousarray(c.transpose(0, 2, 1))


class RBF(Basis):
    """Gaussian bumps on a uniform grid (FastKAN):  B_g(x) = exp(-u²/2),  u = (x - t_g)/(h·tau),
    h the grid spacing of that input dimension (recomputed from the grid, so it follows
    grid updates)."""

    name = "RBF"

    def n_basis(self) -> int:
        return self.G + 1

    def width(self, grid: Any, tau: Any) -> Any:
        """Bump width h·τ per input dimension, (in,)."""
        return (grid[:, -1] - grid[:, 0]) * (tau / self.G)

    def _scaled(self, x: Any, grid: Any, tau: Any) -> Any:
        """u = (x − t_g)/(h·τ) = x/w − t_g/w, (..., in, nb): the divisions on the small
        operands, one pass over the large result. x/w is repeated nb times along its last
        axis and t/w subtracted as one row of in·nb: the same values as broadcasting
        (..., in, 1) against (in, nb), whose inner loop of nb entries costs ≈ 1.7× more."""
        xp, w = array_module(x), self.width(grid, tau)
        xw, gw = x / w, grid / w[:, None]
        u = xp.repeat(xw.astype(xp.result_type(xw, gw), copy=False), grid.shape[1], axis=-1)
        u -= gw.reshape(-1)
        return u.reshape(x.shape + (grid.shape[1],))

    def _bumps(self, u: Any) -> Any:
        """B = exp(−u²/2), a new array."""
        B = u * u  # in place from here on: these are the largest arrays of a step
        B *= -0.5
        return array_module(u).exp(B, out=B)

    def evaluate_cached(self, x: Any, grid: Any, tau: Any) -> tuple[Any, Any]:
        """B and aux = u, which backward and dtau would otherwise recompute."""
        u = self._scaled(x, grid, tau)
        return self._bumps(u), u

    def evaluate(self, x: Any, grid: Any, tau: Any, derivs: bool = False, dtau: bool = True) -> Any:
        u = self._scaled(x, grid, tau)
        B = self._bumps(u)
        if not derivs:
            return B
        dBdtau = (u * u) * B / tau if dtau else None
        u *= B
        u /= -self.width(grid, tau)[:, None]  # dB/dx = −u·B/width
        return B, u, dBdtau

    def backward(self, dB: Any, x: Any, B: Any, grid: Any, tau: Any, need_dx: bool = True,
                 need_dtau: bool = True, aux: Any = None) -> tuple[Any, Any]:
        """With ∂B/∂x = −u·B/w and ∂B/∂τ = u²·B/τ both contractions share P = ∂L/∂B·B·u:
        dx = −Σ_g P / w, dτ = Σ P·u / τ (u = aux when the forward kept it)."""
        u = self._scaled(x, grid, tau) if aux is None else aux  # read only
        P = dB * B
        xp = array_module(P)
        P *= u
        dx = None
        if need_dx:  # Σ_g as a matrix-vector product: 5-8× numpy's sum over the short last axis
            dx = (P.reshape(-1, P.shape[-1]) @ xp.ones(P.shape[-1], dtype=P.dtype)).reshape(P.shape[:-1])
            dx /= -self.width(grid, tau)
        dtau = None
        if need_dtau:
            P *= u
            dtau = P.sum() / tau
        return dx, dtau

    def dtau(self, x: Any, B: Any, grid: Any, tau: Any, aux: Any = None) -> Any:
        """∂B/∂τ = u²·B/τ (u = aux when the forward kept it; never written)."""
        if aux is None:
            u = self._scaled(x, grid, tau)
            u *= u
        else:
            u = aux * aux
        u *= B
        u /= tau
        return u


class BSpline(Basis):
    """Cox–de Boor B-splines of degree k on G+1 knots extended by k on each side
    (G+k functions). tau is not used."""

    name = "B-spline"
    uses_tau = False

    def n_basis(self) -> int:
        return self.G + self.k

    def make_grid(self, xp: Any, in_dim: int, grid_range: tuple[float, float], dtype: Any) -> Any:
        lo, hi = grid_range
        h = (hi - lo) / self.G
        pts = lo + h * xp.arange(-self.k, self.G + self.k + 1, dtype=dtype)
        return xp.tile(pts[None, :], (in_dim, 1))

    def interior(self, grid: Any) -> Any:
        return grid[:, self.k:grid.shape[1] - self.k]

    def grid_from_points(self, points: Any) -> Any:
        """Extend by k knots each side at the mean spacing (last − first)/G of each row."""
        xp = array_module(points)
        h = (points[:, -1:] - points[:, :1]) / self.G
        steps = xp.arange(1, self.k + 1, dtype=points.dtype)
        left = points[:, :1] - h * steps[::-1]
        right = points[:, -1:] + h * steps
        return xp.concatenate([left, points, right], axis=1)

    def _bases(self, x: Any, grid: Any, degree: int) -> Any:
        """Degree-``degree`` B-splines (..., in, n_knots-1-degree) by the Cox–de Boor recursion."""
        xe = x[..., None]
        B = ((xe >= grid[:, :-1]) & (xe < grid[:, 1:])).astype(x.dtype)
        for d in range(1, degree + 1):
            left = (xe - grid[:, :-(d + 1)]) / (grid[:, d:-1] - grid[:, :-(d + 1)])
            right = (grid[:, d + 1:] - xe) / (grid[:, d + 1:] - grid[:, 1:-d])
            B = left * B[..., :-1] + right * B[..., 1:]
        return B

    def evaluate(self, x: Any, grid: Any, tau: Any, derivs: bool = False, dtau: bool = True) -> Any:
        k = self.k
        if not derivs:
            return self._bases(x, grid, k)
        Bkm1 = self._bases(x, grid, k - 1)  # (..., in, G+k+1)
        xe = x[..., None]
        left = (xe - grid[:, :-(k + 1)]) / (grid[:, k:-1] - grid[:, :-(k + 1)])
        right = (grid[:, k + 1:] - xe) / (grid[:, k + 1:] - grid[:, 1:-k])
        B = left * Bkm1[..., :-1] + right * Bkm1[..., 1:]
        # B'_{i,k} = k/(t_{i+k}-t_i) B_{i,k-1} - k/(t_{i+k+1}-t_{i+1}) B_{i+1,k-1}
        a = k / (grid[:, k:-1] - grid[:, :-(k + 1)])
        b = k / (grid[:, k + 1:] - grid[:, 1:-k])
        dBdx = a * Bkm1[..., :-1] - b * Bkm1[..., 1:]
        return B, dBdx, None



class GridFreeBasis(Basis):
    """A basis without knots (FFT, Chebyshev): no grid, skipped by grid updating."""

    uses_grid = False

    def make_grid(self, xp: Any, in_dim: int, grid_range: tuple[float, float], dtype: Any) -> Any:
        return None

    def interior(self, grid: Any) -> Any:
        return None


class FFT(GridFreeBasis):
    """Fourier features  cos(2π τ g x), sin(2π τ g x),  g = 0..G  (2(G+1) functions, no grid).

    Coefficient layout: the method's (2, in, out, G+1) array (index 0 = cos, 1 = sin) is
    stored as ``coef`` (in, out, 2(G+1)) with the cos block first, then the sin block:
    ``coef[i, o, g] = c_spec[0, i, o, g]`` and ``coef[i, o, G+1+g] = c_spec[1, i, o, g]``,
    i.e. ``c_spec = coef.reshape(in, out, 2, G+1).transpose(2, 0, 1, 3)``. The basis
    values follow the same order, ``B[..., :G+1]`` = cos, ``B[..., G+1:]`` = sin. (The
    g = 0 sine is identically zero; it is kept so the layout matches the reference.)

    Values are cos/sin of g·θ, θ = 2π τ x, computed directly into the two blocks; the
    angle-addition recurrence (:func:`_harmonics`, ``use_recurrence = True``) is an option
    with the same float32 accuracy that was slower on CPU (bench/bases.py).
    """

    name = "FFT"
    # True: harmonics by angle addition from cos θ, sin θ (_harmonics). Measured slower on
    # CPU (numpy's SIMD float32 cos/sin beat the strided recurrence steps), so off by
    # default; kept as an option for bench/bases.py and other devices.
    use_recurrence = False

    def n_basis(self) -> int:
        return 2 * (self.G + 1)

    def evaluate(self, x: Any, grid: Any, tau: Any, derivs: bool = False, dtau: bool = True) -> Any:
        xp = array_module(x)
        G1 = self.G + 1
        two_pi = 2.0 * math.pi
        theta = x * (two_pi * tau)
        if self.use_recurrence:
            B = _harmonics(xp, theta, G1)  # (..., in, 2(G+1)): cos block | sin block
        else:  # direct cos/sin of g·θ, written straight into the two blocks
            ang = theta[..., None] * xp.arange(G1, dtype=theta.dtype)
            B = xp.empty(theta.shape + (2 * G1,), dtype=theta.dtype)
            xp.cos(ang, out=B[..., :G1])
            xp.sin(ang, out=B[..., G1:])
        if not derivs:
            return B
        g = xp.arange(G1, dtype=B.dtype)
        # d/dx cos(g θ) = -g θ' sin(g θ), d/dx sin(g θ) = g θ' cos(g θ), θ' = 2π τ
        dBdx = xp.empty_like(B)
        wx = (two_pi * tau) * g  # (G+1,)
        xp.multiply(B[..., G1:], -wx, out=dBdx[..., :G1])
        xp.multiply(B[..., :G1], wx, out=dBdx[..., G1:])
        if not dtau:
            return B, dBdx, None
        # d/dτ: same with ∂θ/∂τ = 2π x (no division by τ)
        wt = (two_pi * g) * x[..., None]  # (..., in, G+1)
        dBdtau = xp.empty_like(B)
        xp.multiply(B[..., G1:], -wt, out=dBdtau[..., :G1])
        xp.multiply(B[..., :G1], wt, out=dBdtau[..., G1:])
        return B, dBdx, dBdtau

    def init_coef(self, rng: Any, xp: Any, in_dim: int, out_dim: int, grid: Any, tau: Any,
                  eps_scale: float, dtype: Any) -> Any:
        """Spec init: glorot-normal over (in, out), i.e. N(0, 2/(in+out)), divided by
        √in·(g+1)² for frequency g (same factor for its cos and sin coefficient).

        Note: the Julia reference calls glorot_normal on the 4-d (in, out, 2, G+1) array,
        whose Lux fans are in·out·2 and in·out·(G+1), i.e. std √(2/(in·out·(G+3))) before
        the same division: much smaller than the (in, out) reading used here."""
        G1 = self.G + 1
        n = rng.standard_normal((in_dim, out_dim, 2 * G1), dtype=dtype)
        g = xp.arange(G1, dtype=dtype)
        denom = in_dim ** 0.5 * (g + 1) ** 2  # (G+1,)
        scale = (2.0 / (in_dim + out_dim)) ** 0.5 / xp.concatenate([denom, denom])
        return n * scale.astype(dtype)


def _harmonics(xp: Any, theta: Any, G1: int) -> Any:
    """cos(g θ) and sin(g θ) for g = 0..G1-1 as one array (..., G1 cos | G1 sin).

    Only cos θ and sin θ are transcendental calls; higher harmonics use the angle
    addition formulas  c_{g+1} = c_g c_1 - s_g s_1,  s_{g+1} = s_g c_1 + c_g s_1, applied
    in doubling blocks (harmonics g+m from g and m, m = 1, 2, 4, ...) so that there are
    only log2(G1) vectorised steps. Rounding error grows about linearly with g (each
    step is a rotation, error does not amplify); in float32 at g = 50, |x| ≲ 5 it is
    ~1e-4, no worse than rounding the directly computed angle g·θ.
    (tests/test_bases.py::test_fft_recurrence_matches_direct_in_float32)
    """
    out = xp.empty(theta.shape + (2 * G1,), dtype=theta.dtype)
    C, S = out[..., :G1], out[..., G1:]
    C[..., 0] = 1
    S[..., 0] = 0
    if G1 > 1:
        xp.cos(theta, out=C[..., 1])
        xp.sin(theta, out=S[..., 1])
    m = 2  # harmonics 0..m-1 are filled
    while m < G1:
        n = min(m, G1 - m)  # fill m..m+n-1 from (0..n-1) rotated by m
        cm, sm = C[..., m - 1:m], S[..., m - 1:m]
        c1, s1 = C[..., 1:2], S[..., 1:2]
        cmm = cm * c1 - sm * s1  # harmonic m = (m - 1) + 1
        smm = sm * c1 + cm * s1
        Cn, Sn = C[..., :n], S[..., :n]
        C[..., m:m + n] = Cn * cmm - Sn * smm
        S[..., m:m + n] = Sn * cmm + Cn * smm
        m += n
    return out


class Cheby(GridFreeBasis):
    """Chebyshev polynomials  T_g(u),  u = tanh(x)/τ,  g = 0..k  (k = ``spline_degree``).

    No grid and, as in the reference, no base branch (w_base·b(x) is dropped). Values and
    u-derivatives use the three-term recurrences T_{g+1} = 2u T_g − T_{g−1} and
    T'_{g+1} = 2 T_g + 2u T'_g − T'_{g−1} (valid for |u| > 1, which happens when τ < 1;
    the reference's cos(g·arccos u) form would give NaN there).
    """

    name = "Cheby"
    has_base_branch = False

    def n_basis(self) -> int:
        return self.k + 1

    def evaluate(self, x: Any, grid: Any, tau: Any, derivs: bool = False, dtau: bool = True) -> Any:
        xp = array_module(x)
        t = xp.tanh(x)
        u = t / tau
        nb = self.k + 1
        T = xp.empty(u.shape + (nb,), dtype=u.dtype)
        T[..., 0] = 1
        if nb > 1:
            T[..., 1] = u
        for g in range(1, nb - 1):
            T[..., g + 1] = 2 * u * T[..., g] - T[..., g - 1]
        if not derivs:
            return T
        D = xp.empty_like(T)  # dT_g/du
        D[..., 0] = 0
        if nb > 1:
            D[..., 1] = 1
        for g in range(1, nb - 1):
            D[..., g + 1] = 2 * T[..., g] + 2 * u * D[..., g] - D[..., g - 1]
        dudx = (1 - t * t) / tau
        dBdx = D * dudx[..., None]
        dBdtau = D * (-u / tau)[..., None] if dtau else None
        return T, dBdx, dBdtau

    def init_coef(self, rng: Any, xp: Any, in_dim: int, out_dim: int, grid: Any, tau: Any,
                  eps_scale: float, dtype: Any) -> Any:
        """ChebyKAN-style, following the reference's form: glorot-normal over (in, out),
        N(0, 2/(in+out)), times 1/(in·(k+1)), every degree with the same scale:
        std √(2/(in+out)) / (in·(k+1)). (The Julia reference applies glorot_normal to the
        3-d (in, out, k+1) array, Lux fans in·out and in·(k+1): std √(2/(in·(out+k+1))).)"""
        n = rng.standard_normal((in_dim, out_dim, self.k + 1), dtype=dtype)
        return n * ((2.0 / (in_dim + out_dim)) ** 0.5 / (in_dim * (self.k + 1)))


class RSWAF(Basis):
    """Reflectional switch activation functions on the RBF grid (G+1 uniform points):
    B_g(x) = 1 − tanh²((x − t_g)/τ). As in the reference, τ is the width itself (not
    scaled by the grid spacing). Default (grid-based least-squares) initialisation."""

    name = "RSWAF"

    def n_basis(self) -> int:
        return self.G + 1

    def evaluate(self, x: Any, grid: Any, tau: Any, derivs: bool = False, dtau: bool = True) -> Any:
        xp = array_module(x)
        u = (x[..., None] - grid) / tau  # (..., in, G+1)
        th = xp.tanh(u)
        B = 1 - th * th
        if not derivs:
            return B
        dBdu = -2 * th * B
        dBdx = dBdu / tau
        dBdtau = dBdu * (-u / tau) if dtau else None
        return B, dBdx, dBdtau


BASES: dict[str, Callable[..., Basis]] = {}


def register(cls: Callable[..., Basis], name: str | None = None) -> Callable[..., Basis]:
    """Make a basis class available to configs under ``name`` (default ``cls.name``)."""
    BASES[name or cls.name] = cls
    return cls


def make_basis(name: str, grid_size: int, degree: int = 3) -> Basis:
    """Instantiate a registered basis; unknown names list the valid ones."""
    if name not in BASES:
        raise ValueError(f"unknown spline_function {name!r}; valid: {', '.join(sorted(BASES))}")
    return BASES[name](grid_size, degree)


register(RBF)
register(BSpline)
register(FFT)
register(Cheby)
register(RSWAF)
