"""The dense part of a training step against its plain formulas (float64, random inputs):
the KAN network form's blocked weight passes (kaem/kernels/kan_weights.py), the optimisers'
chunked step (kaem/kernels/optim_chunks.py), the one-formula sigmoid (kaem/nn/activations.py),
the pair-mode likelihood's blocks over threads with their noise streams
(kaem/kernels/pair_likelihood.py, kaem/numerics.py).

Each kernel here is a faster arrangement of a formula that exists elsewhere in one line;
the test runs it with small block sizes and two threads, so every block boundary and chunk
path is taken, and compares with that line.
"""
from __future__ import annotations

import numpy as np
import pytest

import kaem.kernels.kan_weights as kan
import kaem.kernels.optim_chunks as optim
import kaem.kernels.pair_likelihood as likelihood
from conftest import randomise_kan
from gradcheck import check_grad
from kaem.nn.activations import sigmoid
from kaem.backend import get_backend
from kaem.config import load_config
from kaem.nn.kan import KANLayer, KANSpec
from kaem.likelihood.gaussian import GaussianLikelihood, apply_output_activation, output_activation_grad
from kaem.streams import normal_streams, standard_normal_
from kaem.build import make_optimizer
from kaem.optim import OPTIMIZERS

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
    assert kan.rows_per_block(O * G) == 3 and I % 3
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


def test_coefficients_are_stored_as_in_nb_out_and_gradients_share_the_layout():
    layer = _layer()
    c, gc = layer.params["coef"], layer.grads["coef"]
    assert c.shape == gc.shape == (11, 4, 8)
    assert c.transpose(0, 2, 1).flags.c_contiguous and gc.transpose(0, 2, 1).flags.c_contiguous


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


# ---- optimiser: chunks over threads -----------------------------------------------------

@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_optimiser_chunks_over_threads_give_the_whole_array_update_exactly(kind, monkeypatch):
    """A step in chunks of 7 entries on two threads equals the one-chunk step bit for bit
    (every entry's arithmetic is the same), for contiguous parameters, transposed ones
    (chunked in memory order, as the KAN coefficients stored as (in, nb, out)), one whose
    gradient has another layout, and a 0-d one."""
    shapes = {"a": (5, 9), "b": (40,), "t": ()}

    def run(chunk, threads):
        monkeypatch.setattr(optim, "CHUNK", chunk)
        monkeypatch.setenv("KAEM_THREADS", str(threads))
        rs = np.random.default_rng(6)
        p = {k: rs.normal(size=s) for k, s in shapes.items()}
        p["c"] = rs.normal(size=(6, 4)).T  # not C-contiguous
        p["k"] = np.ascontiguousarray(rs.normal(size=(3, 5, 4)).transpose(0, 2, 1)).transpose(0, 2, 1)
        cfg = load_config("mnist", overrides=[f"OPTIMIZER.type={kind}"] + (["OPTIMIZER.decay=0.1"] if kind == "adamw" else []))
        opt = make_optimizer(p, cfg["OPTIMIZER"])
        for _ in range(3):
            opt.step({k: rs.normal(size=v.shape) for k, v in p.items()})  # gradients C-ordered: p["c"], p["k"] not
        return p, opt.state_dict()

    p1, s1 = run(1 << 30, 1)
    p2, s2 = run(7, 2)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])


# ---- sigmoid ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_matches_the_two_branch_formula(dtype):
    """1/(1+e^{-x}) against the where-form e^{-|x|} based one, over the whole range: equal
    to a few ulps where the value is normal; below, both are at most the smallest normal."""
    x = np.concatenate([np.linspace(-800, 800, 4001), np.random.default_rng(7).normal(0, 5, 2000)]).astype(dtype)
    e = np.exp(-np.abs(x))
    want = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # the overflow to inf is internal
        got = sigmoid(x)
    assert got.dtype == dtype
    tiny = np.finfo(dtype).tiny
    normal = want > tiny
    np.testing.assert_allclose(got[normal], want[normal], rtol=4 * np.finfo(dtype).eps, atol=0)
    assert (got[~normal] <= tiny).all() and (got >= 0).all() and (got <= 1).all()
    y = x.copy()
    assert sigmoid(y, out=y) is y
    np.testing.assert_array_equal(y, got)


# ---- pair-mode likelihood: blocks over threads, noise streams ---------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_streams_reproduce_the_sequential_draw(dtype):
    sizes = [6, 7, 1, 10, 5]
    seq_rng = np.random.default_rng(11)
    want = [standard_normal_(seq_rng, np.empty(n, dtype=dtype)) for n in sizes]
    rng = np.random.default_rng(11)
    gens = normal_streams(rng, sizes, dtype, at=[0, 2, 3])
    got = [None] * len(sizes)
    for g, (j0, j1) in zip(gens, [(0, 2), (2, 3), (3, 5)]):
        for j in range(j0, j1):
            got[j] = standard_normal_(g, np.empty(sizes[j], dtype=dtype))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert rng.bit_generator.state == seq_rng.bit_generator.state  # moved past every block
    assert normal_streams(np.random.Generator(np.random.MT19937(0)), sizes, dtype, [0]) is None


@pytest.mark.parametrize("out_act", ["sigmoid", "tanh", "none"])
def test_pair_likelihood_over_threads_equals_one_thread(out_act, monkeypatch):
    """The blocked pair pass on two threads (several blocks each) gives the one-thread
    ll, gradient and rng state bit for bit, and matches the plain formula on the same noise
    (the reference's one draw of ξ per (datum, sample))."""
    monkeypatch.setattr(likelihood, "BLOCK_ELEMENTS", 2 * 3 * 5)  # 2 s-slices per block
    r = np.random.default_rng(12)
    x, g, dll = r.random((3, 5)), r.normal(size=(9, 5)), r.random((3, 9))

    def run(threads):
        monkeypatch.setenv("KAEM_THREADS", str(threads))
        lik, rng = GaussianLikelihood(0.3, 0.2, out_act, "pair"), np.random.default_rng(13)
        ll = lik.log_lik_pairs(x, g, rng=rng)
        return ll, lik.backward_pairs(dll), rng.bit_generator.state

    ll1, dg1, st1 = run(1)
    ll2, dg2, st2 = run(2)
    np.testing.assert_array_equal(ll1, ll2)
    np.testing.assert_array_equal(dg1, dg2)
    assert st1 == st2
    seq = np.random.default_rng(13)  # the reference's draw: ξ (B, S, D), one per (datum, sample)
    xi = standard_normal_(seq, np.empty((3, 9, 5)))
    y = apply_output_activation(out_act, g[None, :, :] + 0.2 * xi)  # (B, S, D)
    want_ll = -0.5 / 0.3 ** 2 * ((x[:, None, :] - y) ** 2).sum(-1)
    np.testing.assert_allclose(ll1, want_ll, rtol=1e-12)
    want_dg = np.einsum("bs,bsd->sd", dll, (x[:, None, :] - y) * output_activation_grad(out_act, y)) / 0.3 ** 2
    np.testing.assert_allclose(dg1, want_dg, rtol=1e-11, atol=1e-13)
