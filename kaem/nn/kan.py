"""The KAN function layer (method §2).

Every pair (i, o) of a layer owns one univariate function

    φ_{i,o}(x) = w_base[i,o]·b(x) + Σ_g W[i,o,g]·B_g(x; grid_i, τ),    W = w_sp ⊙ c,

and the same parameters are used in two ways:

* ``forward`` (a network layer): y_o = Σ_i φ_{i,o}(x_i), computed as two matrix products
      y = b(x) @ w_base + reshape(B(x), [N, in·nb]) @ Wn,    Wn[(i,g), o] = W[i,o,g];
* ``forward_pointwise`` (the priors): f[n,o,i] = φ_{i,o}(z[n,o,i]), every function on its
  own scalar input, no sum over i. With in = P and out = Q this is f_{q,p}(z_{q,p}) with the
  (q, p) indexing explicit (method §7): ``pointwise_spline`` is the one contraction
  Σ_g W[i,o,g]·B_g, used for φ and, with the basis derivatives, for φ'.

Forward caches what backward needs (inputs, basis values, and what the basis can reuse);
backward accumulates into ``self.grads`` (``need_params=False``: only the input gradient,
for samplers). The prior's hot paths have faster drop-ins in ``kaem/kernels`` (a fused loss
that never forms the basis tensor, weights built once per step, row blocks over the CPU
threads), registered against the functions marked ``@replaceable``.

Initialisation (method §2): w_base = glorot-normal · (μ_scale + σ_base·(2n − 1))/√in with
n ~ N(0, 1) per entry; w_sp = glorot-normal · σ_spline; c from the basis (least-squares fit
of small noise on the grid, or the FFT / Chebyshev scalings).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaem.backend import Backend, array_module
from kaem.kernels import replaceable
from kaem.kernels.scope import fixed_parameters, parameters_changed
from kaem.nn.activations import get_activation
from kaem.nn.bases import make_basis

__all__ = ["KANLayer", "KANSpec", "fixed_parameters", "glorot_normal", "parameters_changed", "pointwise_spline"]


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


def glorot_normal(rng: Any, shape: tuple[int, int], dtype: Any) -> Any:
    """N(0, 2/(fan_in + fan_out)) entries."""
    return rng.standard_normal(shape, dtype=dtype) * (2.0 / (shape[0] + shape[1])) ** 0.5


def pointwise_spline(B: Any, W: Any) -> Any:
    """s[n,o,i] = Σ_g B[n,o,i,g] W[o,i,g]: the spline part of φ_{i,o} on its own input.

    B (N, out, in, nb), or (N, 1, in, nb) for inputs shared by every out (then a matmul
    batched over i); W (out, in, nb) -> (N, out, in). With B' = ∂B/∂x it gives φ's slope."""
    xp = array_module(B)
    if B.shape[1] == 1 and W.shape[0] > 1:
        return (B[:, 0].transpose(1, 0, 2) @ W.transpose(1, 2, 0)).transpose(1, 2, 0)
    return xp.einsum("noig,oig->noi", B, W)


class KANLayer:
    """One layer of univariate functions, ``in_dim`` inputs to ``out_dim`` outputs.

    Parameters (``self.params``; gradients in ``self.grads`` with the same keys):
        w_base (in, out), w_sp (in, out), coef (in, out, nb), tau () when trainable.
        coef is stored in memory as (in, nb, out) (``_stored_as_igo``), the network form's layout.
    Buffers (``self.buffers``): grid (in, n_knots) or None, tau () when frozen.
    """

    row_independent = True  # each sample's output depends on its own input alone

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
            "coef": _stored_as_igo(xp, self.basis.init_coef(rng, xp, in_dim, out_dim, grid, tau, spec.eps_scale, dt)),
        }
        self.buffers = {"grid": grid}
        if spec.tau_trainable and self.basis.uses_tau:
            self.params["tau"] = tau
        else:
            self.buffers["tau"] = tau
        self.grads = {k: xp.zeros_like(v) for k, v in self.params.items()}  # same memory layout as θ
        self._cache: tuple = ()

    @property
    def tau(self) -> Any:
        return self.params["tau"] if "tau" in self.params else self.buffers["tau"]

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def keep_rows(self, rows: Any) -> None:
        """Keep only the samples ``rows`` (indices) in the forward cache: the next backward
        takes dy for those rows alone, as if the forward had seen only them (the kernel that
        drops samples with no gradient, ``kaem/kernels/live_rows.py``)."""
        x, b, db, B, W, aux = self._cache
        self._cache = tuple(None if a is None else a[rows] for a in (x, b, db, B)) + (W, None if aux is None else aux[rows])

    # ---- the spline weights W = w_sp ⊙ c in each form's layout ---------------------------
    @replaceable("KANLayer.spline_weights")
    def spline_weights(self) -> Any:
        """W[o, i, g] = w_sp[i,o]·c[i,o,g], shape (out, in, nb) (the pointwise form)."""
        p = self.params
        return (p["coef"] * p["w_sp"][:, :, None]).transpose(1, 0, 2)

    @replaceable("KANLayer.network_weights")
    def network_weights(self) -> Any:
        """Wn[(i, g), o] = w_sp[i,o]·c[i,o,g], shape (in·nb, out) (the network form's matrix)."""
        p = self.params
        I, O, G = p["coef"].shape
        return (p["coef"] * p["w_sp"][:, :, None]).transpose(0, 2, 1).reshape(I * G, O)

    @replaceable("KANLayer.accumulate_weight_grads")
    def accumulate_weight_grads(self, dW: Any) -> None:
        """Split ∂L/∂W[i,o,g] (in, out, nb), any strides, into the parameters:
        ∂L/∂c = ∂L/∂W ⊙ w_sp,  ∂L/∂w_sp = Σ_g ∂L/∂W ⊙ c."""
        p, g = self.params, self.grads
        g["coef"] += dW * p["w_sp"][:, :, None]
        g["w_sp"] += (dW * p["coef"]).sum(axis=-1)

    @replaceable("KANLayer.network_weight_grads")
    def network_weight_grads(self, B: Any, dy: Any) -> None:
        """∂L/∂Wn = Bᵀ dy (in·nb, out) from the forward's basis B (N, in, nb) and dy (N, out),
        split into the parameters (``accumulate_weight_grads``)."""
        I, O, G = self.params["coef"].shape
        dWn = B.reshape(B.shape[0], -1).T @ dy
        self.accumulate_weight_grads(dWn.reshape(I, G, O).transpose(0, 2, 1))

    def _need_dtau(self, need_params: bool) -> bool:
        return need_params and "tau" in self.grads

    # ---- network form: y = Σ_i φ_{i,o}(x_i) -------------------------------------------
    def forward(self, x: Any, cache: bool = True) -> Any:
        """x (N, in) -> y (N, out); with ``cache`` keeps what ``backward`` needs.

        y = b(x) @ w_base + B(x).reshape(N, in·nb) @ Wn.
        """
        N = x.shape[0]
        Wn = self.network_weights()
        B = self.basis.evaluate(x, self.buffers["grid"], self.tau)  # (N, in, nb)
        y = B.reshape(N, -1) @ Wn
        b = db = None
        if self.has_base_branch:
            b, db = self.act(x)
            y += b @ self.params["w_base"]
        if cache:
            self._cache = (x, b, db, B, Wn, None)
        return y

    def backward(self, dy: Any, need_dx: bool = True, need_params: bool = True) -> Any:
        """dy (N, out) -> dx (N, in); adds ∂L/∂θ into ``self.grads`` unless ``need_params``
        is False (a sampler wants only dx).

        ∂L/∂Wn = Bᵀ dy, split into w_sp and coef; ∂L/∂B = dy Wnᵀ;
        dx = b'(x)·(dy w_baseᵀ) + Σ_g ∂L/∂B_g ∂B_g/∂x, dτ = Σ ∂L/∂B ∂B/∂τ (``Basis.backward``).
        """
        x, b, db, B, Wn, _ = self._cache
        p, g = self.params, self.grads
        if need_params:
            self.network_weight_grads(B, dy)
            if b is not None:
                g["w_base"] += b.T @ dy
        need_tau = self._need_dtau(need_params)
        if not (need_dx or need_tau):
            return None
        dB = (dy @ Wn.T).reshape(B.shape)
        dx, dtau = self.basis.backward(dB, x, B, self.buffers["grid"], self.tau, need_dx, need_tau)
        if need_tau:
            g["tau"] += dtau
        if not need_dx:
            return None
        if b is not None:
            dx += db * (dy @ p["w_base"].T)
        return dx

    # ---- pointwise form: f[n,o,i] = φ_{i,o}(z[n,o,i]) -----------------------------------
    def forward_pointwise(self, z: Any, cache: bool = True) -> Any:
        """z (N, out, in) -> f (N, out, in), each function on its own input; no sum over i.

        z may also be (N, 1, in): every out shares the inputs (quadrature nodes); the basis
        is then evaluated once per (n, i) (``pointwise_spline``).
        """
        W = self.spline_weights()  # (out, in, nb)
        grid, tau = self.buffers["grid"], self.tau
        B, aux = self.basis.evaluate_cached(z, grid, tau) if cache else (self.basis.evaluate(z, grid, tau), None)
        f = pointwise_spline(B, W)
        b = db = None
        if self.has_base_branch:
            b, db = self.act(z)
            f += b * self.params["w_base"].T
        if cache:
            self._cache = (z, b, db, B, W, aux)  # aux: what the basis's backward reuses (RBF: u)
        return f

    def backward_pointwise(self, df: Any, need_dz: bool = True) -> Any:
        """df (N, out, in) -> dz shaped like the forward's z; adds ∂L/∂θ into ``self.grads``.

        ∂L/∂W[o,i,g] = Σ_n df[n,o,i] B[n,o,i,g],  ∂L/∂w_base = Σ_n df ⊙ b,
        ∂L/∂B = df ⊙ W,  dz = Σ_g ∂L/∂B_g ∂B_g/∂z + df ⊙ w_base b'(z),  dτ = Σ ∂L/∂B ∂B/∂τ.

        df may be (N, 1, 1) when every function of sample n gets the same weight df[n] (a
        prior's log density Σ_{o,i} f): then ∂L/∂W = Σ_n df_n B[n] is one matrix-vector
        product, and without dz so is dτ, with no (N, out, in, nb) temporary for ∂L/∂B."""
        xp = array_module(df)
        z, b, db, B, W, aux = self._cache
        p, g = self.params, self.grads
        N = z.shape[0]
        shared = z.shape[1] == 1 and self.out_dim > 1
        per_sample = df.shape[1:] == (1, 1) and not shared
        if per_sample:
            d = df.reshape(1, N)
            dW = (d @ B.reshape(N, -1)).reshape(W.shape)
        elif shared:  # Σ_n df[n,o,i] B[n,i,g] as a matmul batched over i
            dW = (xp.ascontiguousarray(df.transpose(2, 1, 0)) @ B[:, 0].transpose(1, 0, 2)).transpose(1, 0, 2)
        else:
            dW = xp.einsum("noi,noig->oig", df, B)
        self.accumulate_weight_grads(dW.transpose(1, 0, 2))
        if b is not None:
            g["w_base"] += (df * b).sum(0).T
        need_tau = self._need_dtau(True)
        if not (need_dz or need_tau):
            return None
        if per_sample and not need_dz:
            Bt = self.basis.dtau(z, B, self.buffers["grid"], self.tau, aux)
            g["tau"] += ((d @ Bt.reshape(N, -1)) * W.reshape(1, -1)).sum()
            return None
        if shared:  # ∂L/∂B[n,0,i,g] = Σ_o df[n,o,i] W[o,i,g]
            dB = (xp.ascontiguousarray(df.transpose(2, 0, 1)) @ W.transpose(1, 0, 2)).transpose(1, 0, 2)[:, None]
        else:
            dB = df[..., None] * W  # (N, out, in, nb)
        dz, dtau = self.basis.backward(dB, z, B, self.buffers["grid"], self.tau, need_dz, need_tau, aux)
        if need_tau:
            g["tau"] += dtau
        if not need_dz:
            return None
        if b is not None:
            dz += (df * p["w_base"].T).sum(1, keepdims=True) * db if shared else df * db * p["w_base"].T
        return dz

    @replaceable("KANLayer.weighted_pointwise")
    def weighted_pointwise(self, z: Any, d: Any) -> Any:
        """L = Σ_n d_n Σ_{o,i} φ_{i,o}(z[n,o,i]) for z (N, out, in) and constant per-sample
        weights d (N,), returned as a 0-d array; ∂L/∂θ accumulate into ``self.grads``: a
        prior's loss term, as ``forward_pointwise`` then ``backward_pointwise(d)``."""
        f = self.forward_pointwise(z)
        self.backward_pointwise(d[:, None, None], need_dz=False)
        return d @ f.reshape(z.shape[0], -1).sum(axis=1)

    @replaceable("KANLayer.derivative_pointwise")
    def derivative_pointwise(self, z: Any) -> tuple[Any, Any]:
        """f[n,o,i] = φ_{i,o}(z[n,o,i]) and its slope φ'_{i,o}(z[n,o,i]) = w_base·b'(z) +
        Σ_g W B'_g(z): z (N, out, in) or (N, 1, in) (inputs shared by every out) -> two
        (N, out, in) arrays. What a sampler needs from the prior: no cache, no parameter
        gradients."""
        B, Bz, _ = self.basis.evaluate(z, self.buffers["grid"], self.tau, derivs=True, dtau=False)
        W = self.spline_weights()
        f, df = pointwise_spline(B, W), pointwise_spline(Bz, W)
        if self.has_base_branch:
            self.add_base_slope(z, f, df)
        return f, df

    def add_base_slope(self, z: Any, f: Any, df: Any) -> None:
        """f += w_base·b(z), df += w_base·b'(z), in place; z (N, out, in) or (N, 1, in)."""
        b, db = self.act(z)  # may alias z (identity activation): not written in place
        wb = self.params["w_base"].T
        f += b * wb
        df += db * wb


def _stored_as_igo(xp: Any, coef: Any) -> Any:
    """coef (in, out, nb) with the same values, stored in memory as (in, nb, out): the layout of
    the network form's Wn and ∂L/∂Wn, so that building the one and splitting the other are
    contiguous passes. Indexing, shapes and in-place writes are those of an (in, out, nb) array;
    gradients and optimiser state made with ``zeros_like`` share the layout."""
    return xp.ascontiguousarray(coef.transpose(0, 2, 1)).transpose(0, 2, 1)
