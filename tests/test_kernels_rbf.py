"""The RBF prior kernels (kaem/kernels/rbf.py: ``weighted_sums`` and the fused
``KANLayer.weighted_pointwise``) against the reference path (basis tensor,
``forward_pointwise`` + ``backward_pointwise``) and against central differences; and the
inverse-transform sampler kernel (kaem/kernels/its.py) run in q blocks over the CPU threads.
float64, random non-trivial parameters, inputs and weights of both signs.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import randomise_kan
from gradcheck import check_grad, rel_error
from kaem.backend import get_backend
import kaem.kernels.rbf as rbf
from kaem import kernels
from kaem.nn.bases import BASES
from kaem.nn.kan import KANLayer, KANSpec
from kaem.priors import UnivariatePrior

BE = get_backend("cpu", "float64")
TIGHT = 1e-12  # fused vs reference: the same sums in another order


def make_layer(act: str = "silu", tau_trainable: bool = True, basis: str = "RBF", seed: int = 0) -> KANLayer:
    spec = KANSpec(basis=basis, grid_size=6, activation=act, tau_trainable=tau_trainable)
    layer = KANLayer(BE, 4, 3, spec, BE.rng(seed))  # in = 4, out = 3
    randomise_kan(layer.params, 100 + seed)
    if not tau_trainable:
        layer.buffers["tau"][...] = 1.3
    return layer


def samples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """z (n, 3, 4) over the grid range and a little beyond, weights d (n,) of both signs."""
    r = np.random.default_rng(seed)
    return r.uniform(-1.5, 1.5, (n, 3, 4)), r.normal(size=n)


@pytest.fixture(params=[(1 << 14, "1"), (24, "1"), (24, "3")], ids=["one-block", "small-blocks", "3-threads"])
def blocking(request, monkeypatch):
    """The RBF kernel's cache blocks and thread blocks (2 samples a block: many of each)."""
    values, threads = request.param
    monkeypatch.setattr(rbf, "SLOPE_CHUNK", values)
    monkeypatch.setenv("KAEM_THREADS", threads)


@pytest.mark.parametrize("need_dtau", [True, False])
def test_rbf_weighted_sums_match_the_basis_tensor(blocking, need_dtau: bool) -> None:
    layer = make_layer()
    z, d = samples(37, 1)
    grid, tau = layer.buffers["grid"], layer.tau
    S, T = rbf.weighted_sums(layer.basis, z, d, grid, tau, need_dtau)
    B, _, Bt = layer.basis.evaluate(z, grid, tau, derivs=True)  # (N, out, in, nb)
    assert S.shape == (3, 4, 7)
    assert rel_error(S, np.einsum("n,noig->oig", d, B)) < TIGHT
    if need_dtau:
        assert rel_error(T, np.einsum("n,noig->oig", d, Bt)) < TIGHT
    else:
        assert T is None


def reference(layer: KANLayer, z: np.ndarray, d: np.ndarray) -> tuple[float, dict]:
    """Σ_n d_n Σ_{o,i} φ(z) and its gradients by forward_pointwise + backward_pointwise."""
    layer.zero_grad()
    f = layer.forward_pointwise(z)
    layer.backward_pointwise(d[:, None, None], need_dz=False)
    return float(d @ f.sum(axis=(1, 2))), {k: v.copy() for k, v in layer.grads.items()}


@pytest.mark.parametrize("act,tau_trainable", [("silu", True), ("none", True), ("gelu", False)])
def test_weighted_pointwise_matches_reference(blocking, act: str, tau_trainable: bool) -> None:
    layer = make_layer(act, tau_trainable)
    z, d = samples(29, 2)
    want, grads = reference(layer, z, d)
    layer.zero_grad()
    got = float(layer.weighted_pointwise(z, d))
    assert abs(got - want) < TIGHT * abs(want)
    assert set(grads) == ({"w_base", "w_sp", "coef"} | ({"tau"} if tau_trainable else set()))
    for k in grads:
        assert rel_error(layer.grads[k], grads[k]) < TIGHT, k


def test_weighted_pointwise_gradients_by_central_differences() -> None:
    layer = make_layer("silu")
    z, d = samples(9, 3)

    def loss() -> float:
        return float(layer.weighted_pointwise(z, d))  # the fused path's own value

    layer.zero_grad()
    loss()
    grads = {k: v.copy() for k, v in layer.grads.items()}
    for k, p in layer.params.items():
        check_grad(loss, p, grads[k], name=k)


@pytest.mark.parametrize("basis", sorted(set(BASES) - {"RBF"}))
def test_other_bases_have_no_fused_form(basis: str) -> None:
    """The kernel declines (NotImplemented) before touching anything; the layer takes the
    reference path."""
    layer = make_layer(basis=basis)
    z, d = samples(5, 4)
    layer.zero_grad()
    assert rbf.weighted_pointwise(layer, z, d) is NotImplemented
    assert all(not v.any() for v in layer.grads.values())


def prior_loss_and_grads(prior: UnivariatePrior, z, w, z_cd, exact: bool) -> tuple[float, dict]:
    prior.zero_grad()
    loss = float(prior.prior_loss(z, w, z_cd=z_cd, exact_logZ=exact))
    return loss, {k: v.copy() for k, v in prior.grads.items()}


@pytest.mark.parametrize("exact", [False, True], ids=["contrastive", "exact-logZ"])
@pytest.mark.parametrize("pi0", ["ebm", "gaussian", "learnable_gaussian"])
def test_prior_loss_fused_matches_reference_path(pi0: str, exact: bool) -> None:
    """The univariate prior's loss with RBF (fused) equals the same prior on the reference
    path (basis tensor, forward + backward): value and every gradient."""
    spec = KANSpec(basis="RBF", grid_size=5)
    prior = UnivariatePrior(BE, 2, 3, spec, BE.rng(0), pi0=pi0)
    randomise_kan(prior.params, 7)
    for k, v in prior.pi0.params.items():
        v[...] = np.random.default_rng(8).normal(0.0, 0.3, v.shape)
    r = np.random.default_rng(9)
    z, z_cd = prior.sample(11, BE.rng(1)), prior.sample(6, BE.rng(2))
    w = r.dirichlet(np.ones(11))
    fused = prior_loss_and_grads(prior, z, w, None if exact else z_cd, exact)
    with kernels.using("reference"):
        ref = prior_loss_and_grads(prior, z, w, None if exact else z_cd, exact)
    assert abs(fused[0] - ref[0]) < TIGHT * abs(ref[0])
    for k in ref[1]:
        assert rel_error(fused[1][k], ref[1][k]) < TIGHT, k


@pytest.mark.parametrize("shared", [True, False], ids=["shared-u", "own-u"])
def test_sampler_blocks_over_threads_give_the_same_draws(monkeypatch, shared: bool) -> None:
    """The inverse-transform sampler split over q blocks (3 threads) draws what one block
    draws from the same random numbers (float64: the row shift of the flat interpolation
    rounds differently per block, ~1e-12), and every draw is in its own (n, q, p) slot:
    the one-block draws equal rowwise_interp in draw order, computed here without sorting."""
    from kaem.numerics import rowwise_interp

    spec = KANSpec(basis="RBF", grid_size=5)
    prior = UnivariatePrior(BE, 3, 17, spec, BE.rng(0), shared_uniform=shared)  # Q = 17: two q blocks of 8 and 9
    randomise_kan(prior.params, 11)
    monkeypatch.setenv("KAEM_THREADS", "1")
    one = prior.sample(40, BE.rng(4))
    u = BE.rng(4).random((40, 1 if shared else 17, 3))
    cdf, edges = prior.its_tables()
    rows = np.arange(17 * 3).reshape(1, 17, 3)
    want = rowwise_interp(np.broadcast_to(u, (40, 17, 3)), cdf, edges, rows=rows)
    assert rel_error(one, want) < 1e-12
    monkeypatch.setenv("KAEM_THREADS", "3")
    assert rel_error(prior.sample(40, BE.rng(4)), one) < 1e-12
