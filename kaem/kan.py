"""The KAN function layer (spec section 2).

Every pair (i, o) of a layer owns one univariate function

    φ_{i,o}(x) = w_base[i,o]·b(x) + w_sp[i,o]·Σ_g c[i,o,g]·B_g(x; grid_i, τ).

Two ways to use the same parameters:

* ``forward`` (a network layer): y_o = Σ_i φ_{i,o}(x_i), computed as two matrix products
      y = b(x) @ w_base + reshape(B(x), [N, in·nb]) @ reshape(w_sp ⊙ c, [in·nb, out]);
* ``forward_pointwise`` (the prior): f[n,o,i] = φ_{i,o}(z[n,o,i]), every function on its
  own scalar input, no sum over i. With in = P and out = Q this is f_{q,p}(z_{q,p}) with
  the (q, p) indexing explicit (spec 7.1).

Forward caches what backward needs; backward accumulates into ``self.grads`` (or, with
``need_params=False``, returns only the input gradient a sampler needs).
``derivative_pointwise`` gives φ and φ' elementwise, for the prior's z-gradient.

Initialisation (spec 2): w_base = glorot-normal · (μ_scale + σ_base·(2n − 1))/√in with
n ~ N(0, 1) per entry; w_sp = glorot-normal · σ_spline; c from the basis (least-squares
fit of small noise on the grid, or the FFT / Chebyshev scalings).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .activations import get_activation
from .backend import Backend, array_module
from .bases import make_basis


@dataclass(frozen=True)
class KANSpec:
    """Hyper-parameters shared by the layers of one KAN (one config section)."""

    basis: str = "RBF"
    grid_size: int = 20
    degree: int = 3
    activation: str = "silu"
    grid_range: tuple[float, float] = (-1.2, 1.2)
    eps_scale: float = 0.1
    mu_scale: float = 1.0
    sigma_base: float = 1.0
    sigma_spline: float = 1.0
    init_tau: float = 1.0
    tau_trainable: bool = True

    @classmethod
    def from_section(cls, s: dict) -> "KANSpec":
        """Read the reference's keys from a config section (EbmModel or GeneratorModel)."""
        return cls(basis=s["spline_function"], grid_size=s["grid_size"], degree=s["spline_degree"],
                   activation=s["base_activation"], grid_range=tuple(s["grid_range"]),
                   eps_scale=s["ε_scale"], mu_scale=s["μ_scale"], sigma_base=s["σ_base"],
                   sigma_spline=s["σ_spline"], init_tau=s["init_τ"], tau_trainable=s["τ_trainable"])


def glorot_normal(rng: Any, shape: tuple[int, int], dtype: Any) -> Any:
    """N(0, 2/(fan_in + fan_out)) entries."""
    return rng.standard_normal(shape, dtype=dtype) * (2.0 / (shape[0] + shape[1])) ** 0.5


class KANLayer:
    """One layer of univariate functions, ``in_dim`` inputs to ``out_dim`` outputs.

    Parameters (``self.params``; gradients in ``self.grads`` with the same keys):
        w_base (in, out), w_sp (in, out), coef (in, out, nb), tau () when trainable.
    Buffers (``self.buffers``): grid (in, n_knots) or None, tau () when frozen.
    """

    def __init__(self, be: Backend, in_dim: int, out_dim: int, spec: KANSpec, rng: Any) -> None:
        xp, dt = be.xp, be.dtype
        self.in_dim, self.out_dim, self.spec = in_dim, out_dim, spec
        self.basis = make_basis(spec.basis, spec.grid_size, spec.degree)
        self.act = get_activation(spec.activation)
        # base_activation = none drops the branch w_base·b(x), as the reference; identity keeps b(x) = x
        self.has_base_branch = self.basis.has_base_branch and spec.activation != "none"
        grid = self.basis.make_grid(xp, in_dim, spec.grid_range, dt) if self.basis.uses_grid else None
        tau = xp.asarray(spec.init_tau, dtype=dt)
        n = rng.standard_normal((in_dim, out_dim), dtype=dt)
        base_scale = (spec.mu_scale + spec.sigma_base * (2 * n - 1)) / in_dim ** 0.5
        self.params = {
            "w_base": glorot_normal(rng, (in_dim, out_dim), dt) * base_scale,
            "w_sp": glorot_normal(rng, (in_dim, out_dim), dt) * spec.sigma_spline,
            "coef": self.basis.init_coef(rng, xp, in_dim, out_dim, grid, tau, spec.eps_scale, dt),
        }
        self.buffers = {"grid": grid}
        if spec.tau_trainable and self.basis.uses_tau:
            self.params["tau"] = tau
        else:
            self.buffers["tau"] = tau
        self.grads = {k: xp.zeros_like(v) for k, v in self.params.items()}
        self._cache: tuple = ()

    @property
    def tau(self) -> Any:
        return self.params["tau"] if "tau" in self.params else self.buffers["tau"]

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def _spline_weights(self) -> Any:
        """w_sp ⊙ c, shape (in, out, nb)."""
        return self.params["w_sp"][..., None] * self.params["coef"]

    # ---- network form: y = Σ_i φ_{i,o}(x_i) -------------------------------------------
    def forward(self, x: Any, cache: bool = True) -> Any:
        """x (N, in) -> y (N, out); with ``cache`` keeps what ``backward`` needs."""
        N = x.shape[0]
        nb = self.basis.n_basis()
        W = self._spline_weights().transpose(0, 2, 1).reshape(self.in_dim * nb, self.out_dim)
        out = self.basis.evaluate(x, self.buffers["grid"], self.tau, derivs=cache, dtau="tau" in self.params)
        B = out[0] if cache else out
        y = B.reshape(N, -1) @ W
        if self.has_base_branch:
            b, db = self.act(x)
            y += b @ self.params["w_base"]
        else:
            b = db = None
        if cache:
            self._cache = (x, b, db, out, W)
        return y

    def backward(self, dy: Any, need_dx: bool = True, need_params: bool = True) -> Any:
        """dy (N, out) -> dx (N, in); adds ∂L/∂θ into ``self.grads`` unless ``need_params``
        is False (a sampler wants only dx).

        dW = Bᵀ dy (then split into w_sp and coef), dB = dy Wᵀ, dx = b'(x)·(dy w_baseᵀ)
        + Σ_g dB_g ∂B_g/∂x, dτ = Σ dB ∂B/∂τ.
        """
        x, b, db, (B, Bx, Bt), W = self._cache
        N, nb = x.shape[0], self.basis.n_basis()
        p, g = self.params, self.grads
        if need_params:
            dW = (B.reshape(N, -1).T @ dy).reshape(self.in_dim, nb, self.out_dim).transpose(0, 2, 1)
            g["coef"] += dW * p["w_sp"][..., None]
            g["w_sp"] += (dW * p["coef"]).sum(-1)
        need_tau = need_params and "tau" in g
        dB = (dy @ W.T).reshape(N, self.in_dim, nb) if need_dx or need_tau else None
        if need_tau:
            g["tau"] += (dB * Bt).sum()
        if need_params and b is not None:
            g["w_base"] += b.T @ dy
        if not need_dx:
            return None
        dx = (dB * Bx).sum(-1)
        if b is not None:
            dx += db * (dy @ p["w_base"].T)
        return dx

    # ---- pointwise form: f[n,o,i] = φ_{i,o}(z[n,o,i]) -----------------------------------
    def forward_pointwise(self, z: Any, cache: bool = True) -> Any:
        """z (N, out, in) -> f (N, out, in), each function on its own input; no sum over i.

        z may also be (N, 1, in): every out shares the inputs (quadrature nodes). Then the
        basis is evaluated once per (n, i) and the contraction over g is a matmul batched
        over i, f[n,o,i] = Σ_g B[n,i,g] (w_sp ⊙ c)[i,o,g].
        """
        xp = array_module(z)
        Wt = self._spline_weights().transpose(1, 0, 2)  # (out, in, nb)
        out = self.basis.evaluate(z, self.buffers["grid"], self.tau, derivs=cache, dtau="tau" in self.params)
        B = out[0] if cache else out  # (N, out or 1, in, nb)
        if z.shape[1] == 1 and self.out_dim > 1:
            f = (B[:, 0].transpose(1, 0, 2) @ Wt.transpose(1, 2, 0)).transpose(1, 2, 0)
        else:
            f = xp.einsum("noig,oig->noi", B, Wt)
        if self.has_base_branch:
            b, db = self.act(z)
            f += b * self.params["w_base"].T
        else:
            b = db = None
        if cache:
            self._cache = (z, b, db, out, Wt)
        return f

    def backward_pointwise(self, df: Any, need_dz: bool = True) -> Any:
        """df (N, out, in) -> dz shaped like the forward's z; adds ∂L/∂θ into ``self.grads``."""
        xp = array_module(df)
        z, b, db, (B, Bz, Bt), Wt = self._cache
        p, g = self.params, self.grads
        shared = z.shape[1] == 1 and self.out_dim > 1
        if shared:  # Σ_n df[n,o,i] B[n,i,g] as a matmul batched over i (contiguous df: 20-35% faster)
            dWt = (xp.ascontiguousarray(df.transpose(2, 1, 0)) @ B[:, 0].transpose(1, 0, 2)).transpose(1, 0, 2)
        else:
            dWt = xp.einsum("noi,noig->oig", df, B)
        dW = dWt.transpose(1, 0, 2)  # ∂L/∂(w_sp ⊙ c), (in, out, nb)
        g["coef"] += dW * p["w_sp"][..., None]
        g["w_sp"] += (dW * p["coef"]).sum(-1)
        if b is not None:
            g["w_base"] += (df * b).sum(0).T
        if not (need_dz or "tau" in g):
            return None
        if shared:  # ∂L/∂B[n,0,i,g] = Σ_o df[n,o,i] Wt[o,i,g]
            dB = (xp.ascontiguousarray(df.transpose(2, 0, 1)) @ Wt.transpose(1, 0, 2)).transpose(1, 0, 2)[:, None]
        else:
            dB = df[..., None] * Wt  # (N, out, in, nb)
        if "tau" in g:
            g["tau"] += (dB * Bt).sum()
        if not need_dz:
            return None
        dz = (dB * Bz).sum(-1)
        if b is not None:
            dz += (df * p["w_base"].T).sum(1, keepdims=True) * db if shared else df * db * p["w_base"].T
        return dz

    def derivative_pointwise(self, z: Any) -> tuple[Any, Any]:
        """f[n,o,i] = φ_{i,o}(z[n,o,i]) and its derivative φ'_{i,o}(z[n,o,i]); z (N, out, in), or
        (N, 1, in) for inputs shared by every out (as in ``forward_pointwise``).

        What a sampler needs from the prior: values and z-gradients, no parameter
        gradients and no cache. φ' = w_base·b'(z) + Σ_g (w_sp ⊙ c)_g B'_g(z).
        """
        xp = array_module(z)
        Wt = self._spline_weights().transpose(1, 0, 2)  # (out, in, nb)
        B, Bz, _ = self.basis.evaluate(z, self.buffers["grid"], self.tau, derivs=True, dtau=False)
        if z.shape[1] == 1 and self.out_dim > 1:  # inputs shared by every out, as in forward_pointwise
            W = Wt.transpose(1, 2, 0)  # (in, nb, out)
            f = (B[:, 0].transpose(1, 0, 2) @ W).transpose(1, 2, 0)
            df = (Bz[:, 0].transpose(1, 0, 2) @ W).transpose(1, 2, 0)
        else:
            f = xp.einsum("noig,oig->noi", B, Wt)
            df = xp.einsum("noig,oig->noi", Bz, Wt)
        if self.has_base_branch:
            b, db = self.act(z)
            f += b * self.params["w_base"].T
            df += db * self.params["w_base"].T
        return f, df
