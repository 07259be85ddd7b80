"""The dense part of a training step against its plain formulas (float64, random inputs):
the KAN network form's blocked weight passes (kaem/kan.py).

Each kernel here is a faster arrangement of a formula that exists elsewhere in one line;
the test runs it with small block sizes and two threads, so every block boundary and chunk
path is taken, and compares with that line.
"""
from __future__ import annotations

import numpy as np
import pytest

import kaem.kan as kan
from conftest import randomise_kan
from gradcheck import check_grad
from kaem.backend import get_backend
from kaem.kan import KANLayer, KANSpec

BE = get_backend("cpu", "float64")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 rows and two threads: several chunks per thread and a ragged last one."""
    monkeypatch.setenv("KAEM_THREADS", "2")
    monkeypatch.setattr(kan, "SPLIT_ELEMENTS", 3 * 4 * 8)


def _layer(in_dim=11, out_dim=4, seed=0):
    layer = KANLayer(BE, in_dim, out_dim, KANSpec(basis="RBF", grid_size=7), BE.rng(seed))
    randomise_kan(layer.params, 100 + seed)
    return layer


def test_network_weights_and_weight_gradients_match_the_formulas(small_blocks):
    layer = _layer()
    p = layer.params
    c, w = p["coef"], p["w_sp"]
    I, O, G = c.shape
    assert kan._rows_per_block(O * G) == 3 and I % 3
    want_W = (c * w[..., None]).transpose(0, 2, 1).reshape(I * G, O)  # Wn[(i,g), o] = w_sp[i,o] c[i,o,g]
    np.testing.assert_allclose(layer.network_weights(), want_W, rtol=1e-15, atol=0)

    r = np.random.default_rng(1)
    x, dy = r.uniform(-1.2, 1.2, (9, I)), r.normal(size=(9, O))
    layer.zero_grad()
    layer.grads["coef"][...] = r.normal(size=c.shape)  # backward adds to what is there
    layer.grads["w_sp"][...] = r.normal(size=w.shape)
    before = {k: layer.grads[k].copy() for k in ("coef", "w_sp")}
    layer.forward(x)
    layer.backward(dy)
    B = layer.basis.evaluate(x, layer.buffers["grid"], layer.tau)
    dW = np.einsum("no,nig->iog", dy, B)  # ∂L/∂W[i,o,g] = Σ_n dy[n,o] B[n,i,g]
    np.testing.assert_allclose(layer.grads["coef"] - before["coef"], dW * w[..., None], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["w_sp"] - before["w_sp"], (dW * c).sum(-1), rtol=1e-12, atol=1e-12)


def test_network_form_gradients_with_small_blocks(small_blocks):
    layer = _layer(seed=2)
    r = np.random.default_rng(3)
    x, R = r.uniform(-1.3, 1.3, (6, layer.in_dim)), r.normal(size=(6, layer.out_dim))

    def loss():
        return float((layer.forward(x, cache=False) * R).sum())

    layer.zero_grad()
    layer.forward(x)
    dx = layer.backward(R)
    check_grad(loss, x, dx, tol=1e-6, name="dx")
    for k in layer.params:
        check_grad(loss, layer.params[k], layer.grads[k], tol=1e-6, name=k)
