"""Gaussian observation model with noise injection (method §1.4).

    log p(x | z) = − ‖ x − y ‖² / (2 σ²)  [ − D/2 · log(2π σ²) ],    y = out_act( g + σ_n ξ ),

g = G(h) the generator's pre-activation, ξ ~ N(0, I), σ = ``generator_variance`` (used as a
standard deviation, as the reference does) and σ_n = ``generator_noise``. The equation is
:func:`log_lik` (from the squared distances) and its gradient :func:`log_lik_grad`
(∂ll/∂g = (x − y) ⊙ out_act'(y) / σ²); everything below calls them. Training drops the
constant; held-out evaluation keeps it and uses no injection noise, so its numbers are true
log densities of the model N(x; out_act(g), σ² I).

The likelihood is evaluated in two layouts:

* all pairs (importance sampling): ll[b, s] for every datum b and latent sample s;
* paired rows (Langevin chains): ll[n] for datum b(n) and chain n.

Who shares an injection-noise draw (``GeneratorModel.noise_sharing``):

* ``pair`` (the reference's): ξ_bs for every (datum b, latent sample s); the pairs then
  make one pass over an (S, B, D) tensor.
* ``sample``: ξ_s per latent sample, shared by the whole batch as z_s already is, so the
  proposal of importance sampling is the pair (z_s, ξ_s). With y_s = out_act(g_s + σ_n ξ_s),
  the pairs and their gradient are matrix products:

      ‖x_b − y_s‖² = ‖x_b‖² − 2 x_b·y_s + ‖y_s‖²,
      ∂L/∂g_s = ( Σ_b dll[b,s] x_b − y_s Σ_b dll[b,s] ) ⊙ out_act'(y_s) / σ².

  Every single ll[b, s] has the same law in both modes; only the correlation between the
  data of a batch changes. For Langevin chains (chain i = r·B + b for datum b) ``sample``
  shares ξ_r across the batch, and ``pair`` draws one per chain.
"""
from __future__ import annotations

import math
from typing import Any

from kaem.backend import array_module
from kaem.kernels import replaceable
from kaem.nn.activations import sigmoid
from kaem.streams import normals, shared, standard_normal_

OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "none")
NOISE_SHARING = ("pair", "sample")


def log_lik(sq: Any, sigma: float) -> Any:
    """The Gaussian log-likelihood −‖x − y‖²/(2σ²) from squared distances sq (any shape)."""
    return sq * (-0.5 / sigma ** 2)


def log_lik_grad(r: Any, y: Any, out_act: str, sigma: float) -> Any:
    """∂ll/∂g = r ⊙ out_act'(y) / σ² with r = x − y and y = out_act(g), in place in r."""
    r *= output_activation_grad(out_act, y)
    r *= 1.0 / sigma ** 2
    return r


def apply_output_activation(name: str, a: Any, out: Any = None) -> Any:
    """y = out_act(a), optionally in place (``out=a``) to spare a temporary."""
    xp = array_module(a)
    if name == "sigmoid":
        return sigmoid(a, out=out)
    if name == "tanh":
        return xp.tanh(a, out=out)
    if out is None:
        return a.copy()
    if out is not a:
        out[...] = a
    return out


def output_activation_grad(name: str, y: Any) -> Any:
    """out_act'(a) written in terms of y = out_act(a)."""
    if name == "sigmoid":
        return y * (1 - y)
    if name == "tanh":
        return 1 - y * y
    return array_module(y).ones_like(y)


def squared_distances(x: Any, y: Any) -> Any:
    """‖x_b − y_s‖² for all pairs as one matrix product; x (B, D), y (S, D) -> (B, S).

    Both sides are centred on the mean of y first (the distances do not change), which
    keeps the cancellation in ‖x‖² − 2x·y + ‖y‖² small in float32."""
    c = y.mean(axis=0)
    xc, yc = x - c, y - c
    return (xc * xc).sum(1)[:, None] - 2 * (xc @ yc.T) + (yc * yc).sum(1)[None, :]


def row_sq(r: Any) -> Any:
    """‖r_n‖² for every row of r (N, D) -> (N,), as a batched product."""
    N, D = r.shape
    return (r.reshape(N, 1, D) @ r.reshape(N, D, 1)).reshape(N)


class GaussianLikelihood:
    """log p(x|z) for every (datum, latent) pair or for paired (chain, datum) rows."""

    def __init__(self, sigma: float, noise: float, out_act: str = "sigmoid", sharing: str = "pair") -> None:
        if out_act not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown output_activation {out_act!r}; valid: {', '.join(OUTPUT_ACTIVATIONS)}")
        if sharing not in NOISE_SHARING:
            raise ValueError(f"unknown noise_sharing {sharing!r}; valid: {', '.join(NOISE_SHARING)}")
        self.sigma, self.noise, self.out_act, self.sharing = float(sigma), float(noise), out_act, sharing
        self._pairs: tuple = ()
        self._rows: tuple = ()

    def log_norm_const(self, D: int) -> float:
        """The dropped constant − D/2 · log(2π σ²)."""
        return -0.5 * D * math.log(2 * math.pi * self.sigma ** 2)

    def output(self, g: Any, rng: Any = None, noise: Any = None) -> Any:
        """y = out_act(g + σ_n ξ), ξ given (``noise``, broadcastable to g) or drawn with g's
        shape from ``rng`` (its shared stream: one ξ per row of g, whoever holds the data);
        no noise when σ_n = 0 or when neither is given."""
        if self.noise == 0 or (noise is None and rng is None):
            return apply_output_activation(self.out_act, g)
        xi = noise if noise is not None else standard_normal_(shared(rng), array_module(g).empty_like(g))
        a = g + self.noise * xi
        return apply_output_activation(self.out_act, a, out=a)  # a is ours: no second temporary

    # ---- all pairs: importance sampling --------------------------------------------------
    def log_lik_pairs(self, x: Any, g: Any, rng: Any = None, noise: Any = None) -> Any:
        """ll[b, s] = log p(x_b | z_s) for every datum and latent sample, constant dropped.

        x: (B, D) data; g: (S, D) pre-activations. Injection noise from ``rng``, or given
        as ``noise``: (B, S, D) standard normals for ``pair`` sharing, (S, D) for ``sample``.
        Returns (B, S) and keeps what ``backward_pairs`` needs.
        """
        if self.sharing == "sample" or self.noise == 0:
            y = self.output(g, rng, noise)  # (S, D)
            self._pairs = ("sample", x, y)
            return log_lik(squared_distances(x, y), self.sigma)
        return self.log_lik_pairs_per_pair(x, g, rng, noise)

    @replaceable("GaussianLikelihood.log_lik_pairs_per_pair")
    def log_lik_pairs_per_pair(self, x: Any, g: Any, rng: Any = None, noise: Any = None) -> Any:
        """``pair`` sharing: y[s, b] = out_act(g_s + σ_n ξ_bs), one (S, B, D) pass; ξ (B, S, D)
        given, or drawn per datum from ``rng`` (``kaem/streams.py``). Keeps the factors
        ∂ll[b,s]/∂g_s (S, B, D) for ``backward_pairs``; returns ll (B, S)."""
        xp = array_module(g)
        (S, D), B = g.shape, x.shape[0]
        xi = noise if noise is not None else normals(rng, (B, S, D), g.dtype, xp)
        y = self.output(g[:, None, :], noise=xi.transpose(1, 0, 2))  # (S, B, D)
        r = x - y
        ll = log_lik(row_sq(r.reshape(S * B, D)).reshape(S, B), self.sigma)
        self._pairs = ("pair", log_lik_grad(r, y, self.out_act, self.sigma))
        return ll.T

    def backward_pairs(self, dll: Any) -> Any:
        """dll (B, S) = ∂L/∂ll -> ∂L/∂g (S, D), with fixed shapes (no gather of the non-zero
        weights, which would cost a device sync).

        ``sample``: (dllᵀ x − y ⊙ Σ_b dll[b, :]) ⊙ out_act'(y)/σ², matrix products.
        ``pair``:   Σ_b dll[b,s] ∂ll[b,s]/∂g_s, one product batched over s with the factors
        the forward pass kept.
        """
        if self._pairs[0] == "sample":
            _, x, y = self._pairs
            dg = dll.T @ x
            dg -= y * dll.sum(axis=0)[:, None]  # Σ_b dll[b,s] (x_b − y_s)
            return log_lik_grad(dg, y, self.out_act, self.sigma)
        return (dll.T[:, None, :] @ self._pairs[1])[:, 0, :]

    # ---- paired rows: Langevin chains ---------------------------------------------------
    def log_lik_rows(self, x: Any, g: Any, rng: Any = None, noise: Any = None, batch: int | None = None) -> Any:
        """ll[n] = log p(x_n | z_n) for paired rows; x, g: (N, D) -> (N,). Caches for backward.

        Injection noise from ``rng`` or given as ``noise``; neither: no noise (the target of
        a sampler). Rows come in groups of ``batch`` (one per datum; default N): with
        ``sample`` sharing the rows of a group share one ξ (from the shared stream), so
        ``noise`` is (N // batch, D); with ``pair`` every row has its own, (N, D), drawn per
        row (``kaem/streams.py``).
        """
        xp = array_module(g)
        N, D = g.shape
        if self.sharing == "sample" and self.noise > 0 and (rng is not None or noise is not None):
            batch = N if batch is None else batch
            if N % batch:
                raise ValueError(f"{N} rows are not a whole number of groups of {batch}")
            if noise is None:
                noise = standard_normal_(shared(rng), xp.empty((N // batch, D), dtype=g.dtype))
            # the group's ξ broadcast into the sum, not copied out to (N, D) first
            a = xp.add(g.reshape(N // batch, batch, D), (self.noise * noise)[:, None, :]).reshape(N, D)
            y = apply_output_activation(self.out_act, a, out=a)
        elif noise is None and rng is not None and self.noise > 0:  # pair: one ξ per row
            y = self.output(g, noise=normals(rng, (N, D), g.dtype, xp))
        else:
            y = self.output(g, rng, noise)
        r = x - y
        self._rows = (r, y)
        return log_lik(row_sq(r), self.sigma)

    def backward_rows(self, dll: Any) -> Any:
        """dll (N,) -> ∂L/∂g (N, D) = dll ⊙ ∂ll/∂g (uses the last ``log_lik_rows``)."""
        r, y = self._rows
        dg = log_lik_grad(r.copy(), y, self.out_act, self.sigma)
        dg *= dll[:, None]
        return dg

    def rows_grad(self) -> Any:
        """∂ll[n]/∂g_n (N, D) of the last ``log_lik_rows``, in place of its cached residual
        (the gradient of Σ_n ll[n]: what a sampler needs, without a copy)."""
        r, y = self._rows
        return log_lik_grad(r, y, self.out_act, self.sigma)

    # ---- evaluation: exact Gaussian densities, no injection noise -------------------------
    def log_density_matrix(self, x: Any, g: Any) -> Any:
        """log N(x_b; out_act(g_s), σ² I) for all pairs, constant included; (B, D), (S, D) -> (B, S).

        ‖x − y‖² = ‖x‖² − 2 x·y + ‖y‖² as one matrix product, so S can be in the thousands.
        """
        y = apply_output_activation(self.out_act, g)
        return log_lik(squared_distances(x, y), self.sigma) + self.log_norm_const(x.shape[1])
