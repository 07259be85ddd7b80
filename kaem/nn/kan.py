"""The KAN function layer (spec section 2).

Every pair (i, o) of a layer owns one univariate function

    φ_{i,o}(x) = w_base[i,o]·b(x) + w_sp[i,o]·Σ_g c[i,o,g]·B_g(x; grid_i, τ).

Two ways to use the same parameters:

* ``forward`` (a network layer): y_o = Σ_i φ_{i,o}(x_i), computed as two matrix products
      y = b(x) @ w_base + reshape(B(x), [N, in·nb]) @ reshape(w_sp ⊙ c, [in·nb, out]);
* ``forward_pointwise`` (the prior): f[n,o,i] = φ_{i,o}(z[n,o,i]), every function on its
  own scalar input, no sum over i. With in = P and out = Q this is f_{q,p}(z_{q,p}) with
  the (q, p) indexing explicit (spec 7.1). A prior's loss Σ_n d_n Σ_{o,i} f[n,o,i] with
  constant per-sample weights d is ``weighted_pointwise``: value and parameter gradients
  in one fused pass where the basis has ``weighted_sums`` (RBF).

Forward caches what backward needs (the inputs and the basis values, and in the pointwise
form what the basis can reuse, RBF's u; derivatives of the basis are formed in backward,
and only those asked for); backward accumulates into
``self.grads`` (or, with ``need_params=False``, returns only the input gradient a sampler
needs). ``derivative_pointwise`` gives φ and φ' elementwise, for the prior's z-gradient.

Spline weights: both forms contract the basis with W[o,i,g] = w_sp[i,o]·c[i,o,g]. The
pointwise form reads W[o, i] directly, in the layout (out, in, nb) (``spline_weights``); the
network form keeps W as one matrix Wn[(i,g), o] (in·nb, out) (``network_weights``), so that
its three products (y = B Wn, ∂L/∂B = dy Wnᵀ, ∂L/∂Wn = Bᵀ dy) need no transposed operand
and ∂L/∂Wn splits into the parameters' layout in cache-sized row blocks. W is rebuilt on
every forward except inside a :func:`fixed_parameters` scope (a sampler's many evaluations,
a training step's forwards and backwards, an evaluation), where each layer builds it once.

Initialisation (spec 2): w_base = glorot-normal · (μ_scale + σ_base·(2n − 1))/√in with
n ~ N(0, 1) per entry; w_sp = glorot-normal · σ_spline; c from the basis (least-squares
fit of small noise on the grid, or the FFT / Chebyshev scalings).
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from kaem.nn.activations import get_activation
from kaem.backend import Backend, array_module
from kaem.nn.bases import make_basis
from kaem.kernels.threads import map_blocks, row_blocks

# the network form's weight passes (build of Wn, split of ∂L/∂W) work in row blocks of
# about this many entries, so that their few elementwise passes run in cache (CPU)
SPLIT_ELEMENTS = 1 << 17


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


# ---- W cache scope ---------------------------------------------------------------------
# Why a scope and not a version counter: parameters are plain arrays written in place by
# the optimiser, grid updating, checkpoint restore and by tests (finite differences poke
# single entries), so no counter can see every write. Instead W is reused only while a
# scope declares the parameters constant: outside one every forward rebuilds W (so any
# write is seen), and each scope gets a fresh id (so nothing survives from one scope to the
# next). Nothing in the library writes parameters or grids inside a scope; grid updating
# and ``KAEM.load_arrays`` call :func:`parameters_changed`, which starts a new id anyway.
_scope: list = [None]  # id of the open scope, None outside
_scope_ids = itertools.count(1)


@contextmanager
def fixed_parameters() -> Iterator[None]:
    """Declare every KAN layer's parameters and grid constant for the ``with`` block: each
    layer then builds W = w_sp ⊙ c once and reuses it. Nested scopes share the outer one."""
    if _scope[0] is not None:
        yield
        return
    _scope[0] = next(_scope_ids)
    try:
        yield
    finally:
        _scope[0] = None


def parameters_changed() -> None:
    """Parameters or grids were written: forget W built in the open scope (if any)."""
    if _scope[0] is not None:
        _scope[0] = next(_scope_ids)


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
        self._W: dict = {}  # form -> (scope id, W) built inside a fixed_parameters scope
        self._dWn: Any = None  # (in·nb, out) scratch for ∂L/∂Wn, reused across steps

    @property
    def tau(self) -> Any:
        return self.params["tau"] if "tau" in self.params else self.buffers["tau"]

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def keep_rows(self, rows: Any) -> None:
        """Keep only the samples ``rows`` (indices) in the forward cache: the next backward
        takes dy for those rows alone, as if the forward had seen only them."""
        x, b, db, B, W, aux = self._cache
        self._cache = tuple(None if a is None else a[rows] for a in (x, b, db, B)) + (W, None if aux is None else aux[rows])

    def _weights(self, form: str, build: Any) -> Any:
        """W of one form from ``build()``: once per :func:`fixed_parameters` scope, on every
        call outside one (and then not kept)."""
        sid = _scope[0]
        hit = self._W.get(form)
        if sid is not None and hit is not None and hit[0] == sid:
            return hit[1]
        W = build()
        self._W[form] = (sid, W if sid is not None else None)
        return W

    def spline_weights(self) -> Any:
        """W[o, i, g] = w_sp[i,o]·c[i,o,g], shape (out, in, nb) (the pointwise form)."""
        def build() -> Any:
            p = self.params
            xp, c = array_module(p["coef"]), p["coef"]
            W = xp.empty((c.shape[1], c.shape[0], c.shape[2]), dtype=xp.result_type(c, p["w_sp"]))
            xp.multiply(c.transpose(1, 0, 2), p["w_sp"].T[:, :, None], out=W)  # one pass, written in W's layout
            return W
        return self._weights("pointwise", build)

    def network_weights(self) -> Any:
        """Wn[(i, g), o] = w_sp[i,o]·c[i,o,g], shape (in·nb, out) (the network form's matrix)."""
        def build() -> Any:
            p = self.params
            xp, c, w = array_module(p["coef"]), p["coef"], p["w_sp"]
            I, O, G = c.shape
            Wn = xp.empty((I, G, O), dtype=xp.result_type(c, w))
            # one pass per row block of i; c is stored as (in, nb, out) (``_stored_as_igo``), so it is read in order
            map_blocks(lambda a, b: xp.multiply(c[a:b].transpose(0, 2, 1), w[a:b, None, :], out=Wn[a:b]),
                       row_blocks(xp, I, _rows_per_block(O * G)))
            return Wn.reshape(I * G, O)
        return self._weights("network", build)

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

        ∂L/∂Wn = Bᵀ dy (in·nb, out), then split into w_sp and coef; ∂L/∂B = dy Wnᵀ;
        dx = b'(x)·(dy w_baseᵀ) + Σ_g ∂L/∂B_g ∂B_g/∂x, dτ = Σ ∂L/∂B ∂B/∂τ (``Basis.backward``).
        """
        x, b, db, B, Wn, _ = self._cache
        N, p, g = x.shape[0], self.params, self.grads
        if need_params:
            xp = array_module(dy)
            if self._dWn is None or self._dWn.shape != Wn.shape or self._dWn.dtype != Wn.dtype:
                self._dWn = xp.empty(Wn.shape, dtype=Wn.dtype)
            xp.matmul(B.reshape(N, -1).T, dy, out=self._dWn)
            I, O, G = p["coef"].shape
            self._split_weight_grads(self._dWn.reshape(I, G, O).transpose(0, 2, 1), scratch=True)
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

    def _add_weight_grads(self, dW: Any) -> None:
        """Split ∂L/∂W (out, in, nb), the pointwise form's layout, into the parameters."""
        self._split_weight_grads(dW.transpose(1, 0, 2))

    def _split_weight_grads(self, dW: Any, scratch: bool = False) -> None:
        """Split ∂L/∂W into the parameters: ∂c = ∂W·w_sp, ∂w_sp = Σ_g ∂W·c.

        dW[i, o, g] (in, out, nb), any strides (a transposed view of either form's ∂L/∂W);
        ``scratch``: dW is the caller's scratch and may be overwritten. Computed on the
        (in, nb, out) views of dW, c and ∂c, in which c is stored: every pass is contiguous
        and the sum over g adds rows. In row blocks of i over the CPU threads, each in
        cache-sized chunks; a dW in another layout is copied chunk by chunk first."""
        xp = array_module(dW)
        p, g = self.params, self.grads
        c, w, gc, gw = (p["coef"].transpose(0, 2, 1), p["w_sp"], g["coef"].transpose(0, 2, 1), g["w_sp"])
        d = dW.transpose(0, 2, 1)  # (in, nb, out)
        I, G, O = c.shape
        rows = _rows_per_block(O * G) if xp is np else I
        in_place = scratch and d.flags.c_contiguous

        def run(a: int, b: int) -> None:
            t = None if in_place else xp.empty((min(rows, b - a), G, O), dtype=gc.dtype)
            u = xp.empty((min(rows, b - a), G, O), dtype=gc.dtype)
            for i0 in range(a, b, rows):  # cache-sized chunks of rows, not a loop over entries
                i1 = min(b, i0 + rows)
                ui = u[:i1 - i0]
                if in_place:
                    ti = d[i0:i1]
                else:
                    ti = t[:i1 - i0]
                    ti[...] = d[i0:i1]
                xp.multiply(ti, c[i0:i1], out=ui)
                gw[i0:i1] += ui.sum(axis=1)
                ti *= w[i0:i1, None, :]
                gc[i0:i1] += ti

        map_blocks(run, row_blocks(xp, I, rows))

    # ---- pointwise form: f[n,o,i] = φ_{i,o}(z[n,o,i]) -----------------------------------
    def forward_pointwise(self, z: Any, cache: bool = True) -> Any:
        """z (N, out, in) -> f (N, out, in), each function on its own input; no sum over i.

        z may also be (N, 1, in): every out shares the inputs (quadrature nodes). Then the
        basis is evaluated once per (n, i) and the contraction over g is a matmul batched
        over i, f[n,o,i] = Σ_g B[n,i,g] W[o,i,g].
        """
        xp = array_module(z)
        W = self.spline_weights()  # (out, in, nb)
        grid, tau = self.buffers["grid"], self.tau
        B, aux = self.basis.evaluate_cached(z, grid, tau) if cache else (self.basis.evaluate(z, grid, tau), None)
        if z.shape[1] == 1 and self.out_dim > 1:
            f = (B[:, 0].transpose(1, 0, 2) @ W.transpose(1, 2, 0)).transpose(1, 2, 0)
        else:
            f = xp.einsum("noig,oig->noi", B, W)
        b = db = None
        if self.has_base_branch:
            b, db = self.act(z)
            f += b * self.params["w_base"].T
        if cache:
            self._cache = (z, b, db, B, W, aux)  # aux: what the basis's backward reuses (RBF: u)
        return f

    def backward_pointwise(self, df: Any, need_dz: bool = True) -> Any:
        """df (N, out, in) -> dz shaped like the forward's z; adds ∂L/∂θ into ``self.grads``.

        df may be (N, 1, 1) when every function of sample n gets the same weight df[n] (a
        prior's log density Σ_{o,i} f): then ∂L/∂W = Σ_n df_n B[n] is one matrix-vector
        product and dτ = Σ_{o,i,g} W · Σ_n df_n ∂B[n]/∂τ another, with no (N, out, in, nb)
        temporary for ∂L/∂B."""
        xp = array_module(df)
        z, b, db, B, W, aux = self._cache
        p, g = self.params, self.grads
        N = z.shape[0]
        shared = z.shape[1] == 1 and self.out_dim > 1
        per_sample = df.shape[1:] == (1, 1) and not shared
        if per_sample:
            d = df.reshape(1, N)
            dW = (d @ B.reshape(N, -1)).reshape(W.shape)
        elif shared:  # Σ_n df[n,o,i] B[n,i,g] as a matmul batched over i (contiguous df: 20-35% faster)
            dW = (xp.ascontiguousarray(df.transpose(2, 1, 0)) @ B[:, 0].transpose(1, 0, 2)).transpose(1, 0, 2)
        else:
            dW = xp.einsum("noi,noig->oig", df, B)
        self._add_weight_grads(dW)
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

    def weighted_pointwise(self, z: Any, d: Any) -> Any:
        """L = Σ_n d_n Σ_{o,i} φ_{i,o}(z[n,o,i]) for z (N, out, in) and constant per-sample
        weights d (N,); ∂L/∂θ accumulate into ``self.grads``. The same as ``forward_pointwise``
        then ``backward_pointwise(d[:, None, None], need_dz=False)``, but fused when the basis
        offers ``weighted_sums`` (RBF): the weights enter only through

            S = Σ_n d_n B(z_n),  T = Σ_n d_n ∂B(z_n)/∂τ   (out, in, nb),  β = Σ_n d_n b(z_n)  (out, in),
            L = Σ W ⊙ S + Σ w_baseᵀ ⊙ β,   ∂L/∂W = S,   ∂L/∂τ = Σ W ⊙ T,   ∂L/∂w_base = βᵀ,

        so neither the (N, out, in, nb) basis tensor nor the per-sample f is formed. Returns
        L (0-d), or None when the basis has no fused form (nothing is computed then)."""
        sums = self.basis.weighted_sums(z, d, self.buffers["grid"], self.tau, self._need_dtau(True))
        if sums is None:
            return None
        S, T = sums
        W, g = self.spline_weights(), self.grads
        loss = (W * S).sum()
        self._add_weight_grads(S)
        if T is not None:
            g["tau"] += (W * T).sum()
        if self.has_base_branch:
            N = z.shape[0]
            beta = (d @ self.act(z)[0].reshape(N, -1)).reshape(z.shape[1:])  # (out, in)
            loss = loss + (beta * self.params["w_base"].T).sum()
            g["w_base"] += beta.T
        return loss

    def derivative_pointwise(self, z: Any) -> tuple[Any, Any]:
        """f[n,o,i] = φ_{i,o}(z[n,o,i]) and its derivative φ'_{i,o}(z[n,o,i]); z (N, out, in), or
        (N, 1, in) for inputs shared by every out (as in ``forward_pointwise``).

        What a sampler needs from the prior: values and z-gradients, no parameter
        gradients and no cache. φ' = w_base·b'(z) + Σ_g W[o,i,g] B'_g(z)
        (``Basis.value_and_slope``: RBF never forms the (N, out, in, nb) basis tensor).
        On the CPU the samples are split into one row block per core, each computed whole
        (spline part, then the base branch while the block is in cache): every value is
        computed alone, so the blocking changes no result.
        """
        W = self.spline_weights()
        if z.shape[1] == 1 and self.out_dim > 1:  # inputs shared by every out, as in forward_pointwise
            B, Bz, _ = self.basis.evaluate(z, self.buffers["grid"], self.tau, derivs=True, dtau=False)
            Wi = W.transpose(1, 2, 0)  # (in, nb, out)
            f = (B[:, 0].transpose(1, 0, 2) @ Wi).transpose(1, 2, 0)
            df = (Bz[:, 0].transpose(1, 0, 2) @ Wi).transpose(1, 2, 0)
            if self.has_base_branch:
                self._add_base_slope(z, f, df)
            return f, df
        xp = array_module(z)
        dtype = xp.result_type(z, W)
        f, df = xp.empty(z.shape, dtype=dtype), xp.empty(z.shape, dtype=dtype)

        def block(r0: int, r1: int) -> None:
            zb, fb, dfb = z[r0:r1], f[r0:r1], df[r0:r1]
            self.basis.value_and_slope(zb, self.buffers["grid"], self.tau, W, out=(fb, dfb))
            if self.has_base_branch:
                self._add_base_slope(zb, fb, dfb)

        per_row = z[0].size or 1  # a block of at least ~2^12 values: thread start-up is paid back
        map_blocks(block, row_blocks(xp, z.shape[0], max(1, 4096 // per_row)))
        return f, df

    def _add_base_slope(self, z: Any, f: Any, df: Any) -> None:
        """f += w_base·b(z), df += w_base·b'(z), in place; z (N, out, in) or (N, 1, in)."""
        b, db = self.act(z)  # may alias z (identity activation): not written in place
        wb = self.params["w_base"].T
        f += b * wb
        df += db * wb


def _rows_per_block(row_size: int) -> int:
    """Rows of ``row_size`` entries that make one cache-sized block (at least one)."""
    return max(1, SPLIT_ELEMENTS // max(1, row_size))


def _stored_as_igo(xp: Any, coef: Any) -> Any:
    """coef (in, out, nb) with the same values, stored in memory as (in, nb, out): the layout of
    the network form's Wn and ∂L/∂Wn, so that building the one and splitting the other are
    contiguous passes. Indexing, shapes and in-place writes are those of an (in, out, nb) array;
    gradients and optimiser state made with ``zeros_like`` share the layout."""
    return xp.ascontiguousarray(coef.transpose(0, 2, 1)).transpose(0, 2, 1)
