"""The conv-transpose generator of the natural-image experiments (method §5, config [CNN]).

The generator input h (N, Q) is a 1×1 image with Q channels; L transposed convolutions
grow it to the data's C×H×W:

    a_0 = h as (N, 1, 1, Q)
    a_l = act( BN_l( ConvT_l(a_{l−1}) ) ),   l = 1..L−1   (BN only with CNN.batchnorm)
    g   = ConvT_L(a_{L−1}),   flattened in (C, H, W) order to (N, D)

An activation sits between layers (method §7.3; the reference's is inside its batch norm, so
without batch norm its generator is linear). The output activation belongs to the
likelihood. With ``CNN.latent_concat`` every layer after the first also sees h, broadcast
over space as Q extra input channels (the reference's option of that name).

One transposed convolution, weight W (Cin, k, k, Cout), bias b (Cout), stride s, padding p,
input x (N, H, W, Cin):

    y[n, s·i + a − p, s·j + c − p, o] += Σ_ci x[n, i, j, ci] · W[ci, a, c, o]   (then + b[o])
    H_out = (H − 1)·s − 2p + k

Arrays are channels-last inside, so the sum over ci is ONE matrix product
cols = x (N·H·W, Cin) @ W (Cin, k·k·Cout), and ``col2im`` adds the k² kernel offsets of cols
into the output as strided slices (the only Python loop: over kernel offsets, (k/s)² of
them when s divides k, never over samples or pixels). Backward mirrors it: ``im2col`` gathers the k² offsets of dy into
dcols, then dW = xᵀ dcols, dx = dcols Wᵀ, db = Σ dy.

Batch norm, per channel over (n, i, j): y = γ (x − μ)/√(σ² + ε) + β. In training mode
(``generator.training``, the default) μ, σ² are the batch's mean and biased variance and
the running averages move towards them (momentum 0.1, unbiased variance); in eval mode the
running averages are used. They are buffers, so checkpoints keep them. Batch statistics
couple the samples of a batch: a Langevin population then samples the joint density of
all its chains (each chain's gradient includes the O(1/N) effect it has on the others'
statistics), as in PyTorch or Lux training mode. The presets leave batch norm off.
"""
from __future__ import annotations

from typing import Any, Sequence

from kaem.nn.activations import get_activation
from kaem.backend import Backend, array_module
from kaem.generators.base import LayerStack

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Spatial size after a transposed convolution: (size − 1)·stride − 2·pad + kernel."""
    return (size - 1) * stride - 2 * pad + kernel


def spatial_sizes(kernels: Sequence[int], strides: Sequence[int], paddings: Sequence[int]) -> list[int]:
    """Side length of the 1×1 latent and after each layer: [1, H_1, ..., H_L]."""
    sizes = [1]
    for k, s, p in zip(kernels, strides, paddings):
        sizes.append(output_size(sizes[-1], k, s, p))
    return sizes


def _scratch(store: dict, key: str, xp: Any, shape: tuple, dtype: Any) -> Any:
    """A work array kept between calls (reallocated only when the shape changes)."""
    buf = store.get(key)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = store[key] = xp.empty(shape, dtype=dtype)
    return buf


def _phase_views(cols: Any, full: Any, stride: int) -> tuple[Any, Any, int]:
    """Views that split each kernel offset a = s·u + r and each output row s·I + r into
    (u, r) and (I, r) (k a multiple of s): cols (N, H, W, m, s, m, s, C) and
    full (N, H + m − 1, s, W + m − 1, s, C), m = k / s."""
    N, H, W, k, _, C = cols.shape
    m = k // stride
    return (cols.reshape(N, H, W, m, stride, m, stride, C),
            full.reshape(N, H + m - 1, stride, W + m - 1, stride, C), m)


def col2im(cols: Any, out: Any, stride: int) -> Any:
    """out[n, s·i + a, s·j + c] += cols[n, i, j, a, c] for every kernel offset (a, c).

    cols (N, H, W, k, k, C), out (N, (H−1)s + k, (W−1)s + k, C). Returns out.
    When s divides k, offsets a = s·u + r with the same u land on the same output rows
    s·(i + u) + r for all phases r at once, so (k/s)² slice additions (each s·C contiguous
    values per pixel) replace k² (C values each)."""
    _, H, W, k = cols.shape[:4]
    if k % stride == 0:
        c8, o6, m = _phase_views(cols, out, stride)
        for u in range(m):
            for v in range(m):
                o6[:, u:u + H, :, v:v + W] += c8[:, :, :, u, :, v].transpose(0, 1, 3, 2, 4, 5)
        return out
    for a in range(k):
        for c in range(k):
            out[:, a:a + stride * (H - 1) + 1:stride, c:c + stride * (W - 1) + 1:stride] += cols[:, :, :, a, c]
    return out


def im2col(padded: Any, cols: Any, stride: int) -> Any:
    """cols[n, i, j, a, c] = padded[n, s·i + a, s·j + c], the adjoint of :func:`col2im`
    (and gathered the same way). padded (N, (H−1)s + k, (W−1)s + k, C), cols (N, H, W, k, k, C)."""
    _, H, W, k = cols.shape[:4]
    if k % stride == 0:
        c8, p6, m = _phase_views(cols, padded, stride)
        for u in range(m):
            for v in range(m):
                c8[:, :, :, u, :, v] = p6[:, u:u + H, :, v:v + W].transpose(0, 1, 3, 2, 4, 5)
        return cols
    for a in range(k):
        for c in range(k):
            cols[:, :, :, a, c] = padded[:, a:a + stride * (H - 1) + 1:stride, c:c + stride * (W - 1) + 1:stride]
    return cols


def batchnorm_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                      training: bool) -> tuple[Any, tuple]:
    """y = γ (x − μ)/√(σ² + ε) + β per channel (last axis) over all other axes.

    Training: μ, σ² of the batch, and the running averages (updated in place) move by
    BN_MOMENTUM towards μ and the unbiased variance; eval: the running averages are used.
    Returns y and the cache for :func:`batchnorm_backward`."""
    xp = array_module(x)
    axes = tuple(range(x.ndim - 1))
    if training:
        mu = x.mean(axis=axes)
        xc = x - mu
        var = (xc * xc).mean(axis=axes)
        m = x.size // x.shape[-1]
        running_mean += BN_MOMENTUM * (mu - running_mean)
        running_var += BN_MOMENTUM * (var * (m / max(m - 1, 1)) - running_var)
    else:
        xc, var = x - running_mean, running_var
    inv = 1.0 / xp.sqrt(var + BN_EPS)
    xhat = xc * inv
    return xhat * gamma + beta, (xhat, inv, training)


def batchnorm_backward(dy: Any, gamma: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """dy -> (dx, dγ, dβ). Training mode also differentiates through μ and σ² of the batch:
    dx = (γ/√(σ²+ε)) · (dy − mean(dy) − x̂ · mean(dy · x̂)), means per channel."""
    xhat, inv, training = cache
    axes = tuple(range(dy.ndim - 1))
    dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    if training:
        dx = (dy - dy.mean(axis=axes) - xhat * (dgamma / (dy.size // dy.shape[-1]))) * (gamma * inv)
    else:
        dx = dy * (gamma * inv)
    return dx, dgamma, dbeta


class ConvTransposeBlock:
    """One layer: a transposed convolution, then (except the last layer) optional batch norm
    and the activation.

    Parameters: w (Cin + Q_concat, k, k, Cout) Glorot-normal with fans Cin·k², Cout·k² (Lux's
    default is Glorot too), b (Cout) zero, and with batch norm bn_gamma (one), bn_beta (zero).
    Buffers: bn_mean, bn_var (Cout). ``latent_in`` = Q when h is concatenated to the input.
    """

    def __init__(self, be: Backend, cin: int, cout: int, kernel: int, stride: int, pad: int, rng: Any,
                 activation: str | None, batchnorm: bool, latent_in: int = 0) -> None:
        xp, dt = be.xp, be.dtype
        self.cin, self.cout, self.k, self.stride, self.pad, self.latent_in = cin, cout, kernel, stride, pad, latent_in
        fan_in, fan_out = (cin + latent_in) * kernel ** 2, cout * kernel ** 2
        std = (2.0 / (fan_in + fan_out)) ** 0.5
        self.params = {"w": rng.standard_normal((cin + latent_in, kernel, kernel, cout), dtype=dt) * std,
                       "b": xp.zeros(cout, dtype=dt)}
        self.buffers: dict[str, Any] = {}
        if batchnorm:
            self.params.update(bn_gamma=xp.ones(cout, dtype=dt), bn_beta=xp.zeros(cout, dtype=dt))
            self.buffers.update(bn_mean=xp.zeros(cout, dtype=dt), bn_var=xp.ones(cout, dtype=dt))
        self.act = get_activation(activation) if activation else None
        self.grads = {k: xp.zeros_like(v) for k, v in self.params.items()}
        self._cache: tuple = ()
        self._work: dict = {}

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0

    def _weight_matrix(self) -> Any:
        return self.params["w"].reshape(self.cin + self.latent_in, -1)  # (Cin + Q, k·k·Cout)

    def forward(self, x: Any, h: Any = None, training: bool = True, cache: bool = True) -> Any:
        """x (N, H, W, Cin) [and h (N, Q) with latent_in] -> (N, H_out, W_out, Cout)."""
        xp = array_module(x)
        N, H, W, _ = x.shape
        k, s, p, cout = self.k, self.stride, self.pad, self.cout
        wm = self._weight_matrix()
        cols = _scratch(self._work, "cols", xp, (N * H * W, k * k * cout), x.dtype)
        xp.matmul(x.reshape(N * H * W, self.cin), wm[:self.cin], out=cols)
        cols = cols.reshape(N, H, W, k, k, cout)
        if self.latent_in:  # h broadcast over space: its contribution is the same at every pixel
            cols += (h @ wm[self.cin:]).reshape(N, 1, 1, k, k, cout)
        full = _scratch(self._work, "full", xp, (N, (H - 1) * s + k, (W - 1) * s + k, cout), x.dtype)
        full[...] = 0
        col2im(cols, full, s)
        y = full[:, p:full.shape[1] - p, p:full.shape[2] - p] + self.params["b"]
        bn = dact = None
        if "bn_gamma" in self.params:
            y, bn = batchnorm_forward(y, self.params["bn_gamma"], self.params["bn_beta"],
                                      self.buffers["bn_mean"], self.buffers["bn_var"], training)
        if self.act is not None:
            y, dact = self.act(y)
        if cache:
            self._cache = (x, h, bn, dact)
        return y

    def backward(self, dy: Any, need_dx: bool = True, need_dh: bool = True,
                 need_params: bool = True) -> tuple[Any, Any]:
        """dy (N, H_out, W_out, Cout) -> (dx (N, H, W, Cin) or None, dh (N, Q) or None);
        parameter gradients accumulate into ``self.grads`` when ``need_params``."""
        xp = array_module(dy)
        x, h, bn, dact = self._cache
        g, k, s, p = self.grads, self.k, self.stride, self.pad
        N, H, W, _ = x.shape
        if dact is not None:
            dy = dy * dact
        if bn is not None:
            dy, dgamma, dbeta = batchnorm_backward(dy, self.params["bn_gamma"], bn)
            if need_params:
                g["bn_gamma"] += dgamma
                g["bn_beta"] += dbeta
        full = _scratch(self._work, "dfull", xp, (N, (H - 1) * s + k, (W - 1) * s + k, self.cout), dy.dtype)
        if p:
            full[...] = 0
        full[:, p:full.shape[1] - p, p:full.shape[2] - p] = dy
        dcols = _scratch(self._work, "dcols", xp, (N, H, W, k, k, self.cout), dy.dtype)
        dcols = im2col(full, dcols, s).reshape(N * H * W, -1)
        wm = self._weight_matrix()
        dh = dsum = None
        if self.latent_in and (need_params or need_dh):
            dsum = dcols.reshape(N, H * W, -1).sum(axis=1)  # (N, k·k·Cout): h is the same at every pixel
            dh = dsum @ wm[self.cin:].T if need_dh else None
        if need_params:
            gw = g["w"].reshape(self.cin + self.latent_in, -1)
            gw[:self.cin] += x.reshape(N * H * W, self.cin).T @ dcols
            if dsum is not None:
                gw[self.cin:] += h.T @ dsum
            g["b"] += dy.sum(axis=(0, 1, 2))
        dx = (dcols @ wm[:self.cin].T).reshape(N, H, W, self.cin) if need_dx else None
        return dx, dh


class ConvGenerator(LayerStack):
    """Transposed convolutions h (N, Q) -> g (N, C·H·W) with channels
    ``channels[0] = Q -> ... -> channels[-1] = C``; one kernel size, stride and padding per
    layer. Parameter and buffer names are ``<layer>.<name>`` (``0.w``, ``2.bn_mean``).
    """

    def __init__(self, be: Backend, channels: Sequence[int], kernels: Sequence[int], strides: Sequence[int],
                 paddings: Sequence[int], rng: Any, activation: str = "leakyrelu", batchnorm: bool = False,
                 latent_concat: bool = False) -> None:
        L = len(channels) - 1
        if not len(kernels) == len(strides) == len(paddings) == L:
            raise ValueError(f"{L} layers need {L} kernel sizes, strides and paddings")
        self.Q = int(channels[0])
        self.sizes = spatial_sizes(kernels, strides, paddings)
        if min(self.sizes) < 1:
            raise ValueError(f"spatial sizes {self.sizes}: a layer's output is empty")
        self.out_shape = (int(channels[-1]), self.sizes[-1], self.sizes[-1])
        self.layers = [ConvTransposeBlock(be, int(channels[i]), int(channels[i + 1]), int(kernels[i]),
                                          int(strides[i]), int(paddings[i]), rng,
                                          activation=activation if i < L - 1 else None,
                                          batchnorm=batchnorm and i < L - 1,
                                          latent_in=self.Q if latent_concat and i > 0 else 0)
                       for i in range(L)]
        self.training = True

    def forward(self, h: Any, cache: bool = True) -> Any:
        """h (N, Q) -> g (N, C·H·W), the pre-activation output in (C, H, W) order."""
        N = h.shape[0]
        a = h.reshape(N, 1, 1, self.Q)
        for layer in self.layers:
            a = layer.forward(a, h if layer.latent_in else None, self.training, cache)
        return a.transpose(0, 3, 1, 2).reshape(N, -1)

    def backward(self, dg: Any, need_dh: bool = True, need_params: bool = True) -> Any:
        """dg (N, D) -> dh (N, Q) (None without ``need_dh``); parameter gradients accumulate
        unless ``need_params`` is False (samplers need only dh)."""
        N = dg.shape[0]
        C, H, W = self.out_shape
        d = dg.reshape(N, C, H, W).transpose(0, 2, 3, 1)
        dh = None
        for i in range(len(self.layers) - 1, -1, -1):
            d, dh_i = self.layers[i].backward(d, need_dx=need_dh or i > 0, need_dh=need_dh, need_params=need_params)
            if dh_i is not None:
                dh = dh_i if dh is None else dh + dh_i
        if not need_dh:
            return None
        d = d.reshape(N, self.Q)
        return d if dh is None else d + dh
