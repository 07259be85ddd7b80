"""Samples with zero weight are dropped before the parameter gradients (CPU only), and the
gradients stay what the full computation gives:

* the ``LayerStack.backward`` kernel without ``need_dh`` drops the rows of dg that are all
  zero (``live_rows`` + each layer's ``keep_rows``): KAN and MLP generators;
* the ``QuadratureDensities.weighted_log_energy`` kernel drops the samples with d_n = 0
  (``weighted_rows``): the univariate prior's loss, fused (RBF) and reference layer path
  (kaem/kernels/live_rows.py).

float64, random non-trivial parameters and inputs; the comparison is against the same
computation with the dropping switched off (the same sums, without exact zeros).
"""
from __future__ import annotations

import numpy as np
import pytest

import kaem.kernels.live_rows as quadrature
from kaem.kernels import KERNELS, load
from conftest import randomise_kan, tiny_config
from gradcheck import rel_error
from kaem.backend import get_backend
from kaem.generators.base import LayerStack
from kaem.kernels.live_rows import live_rows
from kaem.nn.kan import KANSpec
from kaem.model import KAEM
from kaem.priors import UnivariatePrior

BE = get_backend("cpu", "float64")
TIGHT = 1e-12
DEAD = [1, 4, 5, 9]  # rows of a 12-sample batch with no weight


def generator(kind: str):
    over = ["MLP.use_mlp_lkhood=true"] if kind == "mlp" else []
    model = KAEM(tiny_config(*over), (1, 3, 3), BE, seed=0)
    gen = model.generator
    for layer in gen.layers:
        if "coef" in layer.params:
            randomise_kan(layer.params, 3)
        else:
            for v in layer.params.values():
                v[...] = np.random.default_rng(4).normal(0.0, 0.7, v.shape)
    return gen


def grads_of(gen, h: np.ndarray, dg: np.ndarray, need_dh: bool = False) -> tuple[dict, object]:
    gen.zero_grad()
    gen.forward(h)
    dh = gen.backward(dg, need_dh=need_dh)
    return {k: v.copy() for k, v in gen.grads.items()}, dh


@pytest.mark.parametrize("kind", ["kan", "mlp"])
def test_generator_backward_drops_dead_rows_and_keeps_every_gradient(kind: str, monkeypatch) -> None:
    gen = generator(kind)
    r = np.random.default_rng(5)
    h, dg = r.normal(size=(12, 4)), r.normal(size=(12, 9))
    dg[DEAD] = 0.0
    dg[2, 3] = 0.0  # a live row with one zero entry stays
    assert list(live_rows(gen, dg)) == [i for i in range(12) if i not in DEAD]
    dropped, _ = grads_of(gen, h, dg)
    monkeypatch.setattr(quadrature, "live_rows", lambda stack, dg: None)
    full, _ = grads_of(gen, h, dg)
    for k in full:
        assert np.abs(full[k]).max() > 0, k
        assert rel_error(dropped[k], full[k]) < TIGHT, k


def test_generator_backward_with_no_live_row_leaves_the_gradients_zero() -> None:
    gen = generator("kan")
    h = np.random.default_rng(6).normal(size=(5, 4))
    grads, dh = grads_of(gen, h, np.zeros((5, 9)))
    assert dh is None
    assert all(not v.any() for v in grads.values())


def test_rows_are_kept_whenever_dh_is_wanted_or_a_layer_couples_rows() -> None:
    gen = generator("kan")
    r = np.random.default_rng(7)
    h, dg = r.normal(size=(6, 4)), r.normal(size=(6, 9))
    dg[[0, 3]] = 0.0
    _, dh = grads_of(gen, h, dg, need_dh=True)
    assert dh.shape == (6, 4)  # every sample's input gradient, dead rows included

    class Coupled:  # e.g. batch norm: no row_independent flag
        pass

    stack = LayerStack()
    stack.layers = gen.layers + [Coupled()]
    assert live_rows(stack, dg) is None
    assert live_rows(gen, r.normal(size=(6, 9))) is None  # every row live: nothing to drop


@pytest.mark.parametrize("fused", [True, False], ids=["fused-RBF", "reference-path"])
@pytest.mark.parametrize("exact", [False, True], ids=["contrastive", "exact-logZ"])
def test_prior_loss_drops_zero_weight_samples_and_keeps_value_and_gradients(fused: bool, exact: bool, monkeypatch) -> None:
    prior = UnivariatePrior(BE, 2, 3, KANSpec(basis="RBF", grid_size=5), BE.rng(0), pi0="learnable_gaussian")
    randomise_kan(prior.params, 7)
    for v in prior.pi0.params.values():
        v[...] = np.random.default_rng(8).normal(0.0, 0.3, v.shape)
    if not fused:
        load()
        monkeypatch.delitem(KERNELS, "KANLayer.weighted_pointwise")  # the layer's reference path
    z, z_cd = prior.sample(12, BE.rng(1)), prior.sample(6, BE.rng(2))
    w = np.random.default_rng(9).dirichlet(np.ones(12))
    w[DEAD] = 0.0
    w /= w.sum()
    live_z, live_d = quadrature.weighted_rows(z, -w)
    assert live_z.shape[0] == 12 - len(DEAD) and np.all(live_d != 0)

    def loss_and_grads() -> tuple[float, dict]:
        prior.zero_grad()
        loss = float(prior.prior_loss(z, w, z_cd=None if exact else z_cd, exact_logZ=exact))
        return loss, {k: v.copy() for k, v in prior.grads.items()}

    dropped = loss_and_grads()
    monkeypatch.setattr(quadrature, "weighted_rows", lambda z, d: (z, d))
    full = loss_and_grads()
    assert abs(dropped[0] - full[0]) < TIGHT * abs(full[0])
    for k in full[1]:
        assert rel_error(dropped[1][k], full[1][k]) < TIGHT, k
