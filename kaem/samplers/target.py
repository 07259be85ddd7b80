"""The target protocol shared by all posterior samplers, and tempering helpers.

A sampler population holds N chains along the leading axis: ``z`` has shape
``(N, *latent_shape)``. Every chain i carries its own temperature t_i and targets

    log π_t(z_i) = log p(z_i) + t_i · log p(x_{b(i)} | z_i),

where the datum b(i) of chain i is the target's business (the samplers never look at
data). ``t`` is a per-chain array of shape (N,), so every rung of a thermodynamic ladder
runs in one vectorised population.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

from kaem.backend import array_module

Array = Any  # numpy.ndarray or cupy.ndarray


@runtime_checkable
class Target(Protocol):
    """A posterior split into prior and likelihood, each with its gradient in z."""

    def log_prior(self, z: Array) -> tuple[Array, Array]:
        """log p(z) per chain, shape (N,), and ∇_z log p(z), shape like z."""
        ...

    def log_lik(self, z: Array) -> tuple[Array, Array]:
        """log p(x_b(i) | z_i) per chain, shape (N,), and its ∇_z, shape like z."""
        ...

    # Optional: ``log_lik_value(z)`` -> log p(x_b(i) | z_i) (N,) without the gradient, used for
    # a run's last state when nothing reads its gradients (:func:`evaluate_log_lik`).


class Evaluation(NamedTuple):
    """Prior and likelihood terms at one population state, kept apart so that a
    change of temperature (replica exchange) needs no new target evaluation.

    Attributes:
        lp: log p(z), (N,).
        glp: ∇_z log p(z), like z.
        ll: log p(x|z), (N,).
        gll: ∇_z log p(x|z), like z.
    The last state of a run may carry ll alone (the others None, :func:`evaluate_log_lik`).
    """

    lp: Array
    glp: Array
    ll: Array
    gll: Array

    def tempered(self, t: Array) -> tuple[Array, Array]:
        """(log π_t, ∇ log π_t) = (lp + t·ll, glp + t·gll); t of shape (N,)."""
        return self.lp + t * self.ll, self.glp + expand(t, self.gll) * self.gll

    def where(self, mask: Array, other: "Evaluation") -> "Evaluation":
        """Per chain: self where mask (N,) is True, else other."""
        xp = array_module(self.lp)
        return Evaluation(*(xp.where(expand(mask, a), a, b) for a, b in zip(self, other)))


class PriorOnly:
    """A target with no likelihood, log p(x|z) = 0: runs any sampler on a density alone
    (the deep prior's Langevin sampler). ``log_density_and_grad(z)`` returns log p(z) (N,)
    and ∇_z log p(z) (like z)."""

    def __init__(self, log_density_and_grad: Any) -> None:
        self.log_density_and_grad = log_density_and_grad

    def log_prior(self, z: Array) -> tuple[Array, Array]:
        return self.log_density_and_grad(z)

    def log_lik(self, z: Array) -> tuple[Array, Array]:
        xp = array_module(z)
        return xp.zeros(z.shape[0], dtype=z.dtype), xp.zeros_like(z)


def datum_of_chain(n: int, B: int, like: Array) -> Array:
    """The datum b(i) = i % B of chains i = 0..n−1 (the population layout every sampler and
    objective uses: chain i = r·B + b, so datum b sits in the last index of a (R, B, ...)
    reshape, as replica exchange requires), on the device of ``like``."""
    return array_module(like).arange(n) % B


def chain_rows(x: Array, n: int) -> Array:
    """x_b(i) for chains i = 0..n−1, (n, D) from x (B, D): b(i) = :func:`datum_of_chain`,
    as whole copies of x when B divides n."""
    B = x.shape[0]
    if n % B:
        return x[datum_of_chain(n, B, x)]
    return x if n == B else array_module(x).tile(x, (n // B, 1))


def expand(v: Array, like: Array) -> Array:
    """Reshape a per-chain vector (N,) to (N, 1, ..., 1) so it broadcasts against ``like``."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def per_chain(value: Any, n: int, like: Array) -> Array:
    """A scalar or (N,) array as a float (N,) array on the device and dtype of ``like``."""
    xp = array_module(like)
    return xp.broadcast_to(xp.asarray(value, dtype=like.dtype), (n,)).copy()


def evaluate(target: Target, z: Array) -> Evaluation:
    """Both terms of the target (and their gradients) at z of shape (N, ...)."""
    lp, glp = target.log_prior(z)
    ll, gll = target.log_lik(z)
    return Evaluation(lp, glp, ll, gll)


def evaluate_log_lik(target: Target, z: Array) -> Evaluation:
    """The likelihood term alone at z, ``Evaluation(None, None, ll, None)``: for the last
    state of a run, where only log p(x|z) is read (replica exchange, the returned ll). A
    target with ``log_lik_value`` spares the prior and all gradient work."""
    value = getattr(target, "log_lik_value", None)
    return Evaluation(None, None, value(z) if value is not None else target.log_lik(z)[0], None)


def tempered(target: Target, z: Array, t: Any) -> tuple[Array, Array, Array]:
    """The tempered log density log π_t(z) = log p(z) + t·log p(x|z).

    Args:
        target: a :class:`Target`.
        z: (N, *latent_shape).
        t: temperature, scalar or (N,).

    Returns:
        logp (N,), ∇_z logp (like z), and the log-likelihood ll (N,).
    """
    ev = evaluate(target, z)
    logp, grad = ev.tempered(per_chain(t, z.shape[0], z))
    return logp, grad, ev.ll
