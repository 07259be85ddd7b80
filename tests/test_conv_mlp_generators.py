"""Conv-transpose and MLP generators (kaem/generators/conv.py, mlp.py).

* The transposed convolution against a direct loop over (n, i, j, a, c) written from its
  definition y[n, s·i + a − p, s·j + c − p, o] += Σ_ci x[n,i,j,ci] W[ci,a,c,o].
* float64 central differences for every parameter, the input x, the latent h (also through
  latent_concat) and batch norm in training and eval mode.
* Output shapes at the reference's SVHN / CelebA architectures, the config checks, batch
  norm's running statistics (eval mode, checkpoints), the MLP against plain numpy.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import PAIR, randomise, tiny_config
from gradcheck import check_grad
from kaem.run.checkpoint import load_checkpoint, restore_model, save_checkpoint
from kaem.config import ConfigError, config_to_ini, load_config
from kaem.build import generator_kind
from kaem.generators import ConvGenerator, MLPGenerator
from kaem.generators.conv import ConvTransposeBlock, batchnorm_forward, col2im, im2col
from kaem.model import KAEM

LEAK = 0.01


def ref_conv_transpose(x, w, b, s, p):
    """Direct loops: x (N, H, W, Cin), w (Cin, k, k, Cout) -> (N, Ho, Wo, Cout)."""
    N, H, W, _ = x.shape
    k, cout = w.shape[1], w.shape[3]
    Ho, Wo = (H - 1) * s - 2 * p + k, (W - 1) * s - 2 * p + k
    y = np.zeros((N, Ho, Wo, cout)) + b
    for n in range(N):
        for i in range(H):
            for j in range(W):
                for a in range(k):
                    for c in range(k):
                        oi, oj = s * i + a - p, s * j + c - p
                        if 0 <= oi < Ho and 0 <= oj < Wo:
                            y[n, oi, oj] += x[n, i, j] @ w[:, a, c, :]
    return y


def ref_generator(gen, h, act=lambda v: np.where(v > 0, v, LEAK * v)):
    """The generator's forward from ref_conv_transpose (no batch norm), NCHW-flattened."""
    a = h.reshape(h.shape[0], 1, 1, -1)
    for i, layer in enumerate(gen.layers):
        if layer.latent_in:
            a = np.concatenate([a, np.broadcast_to(h[:, None, None, :], a.shape[:3] + (h.shape[1],))], axis=3)
        a = ref_conv_transpose(a, layer.params["w"], layer.params["b"], layer.stride, layer.pad)
        if i < len(gen.layers) - 1:
            a = act(a)
    return a.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)


def _block(be, cin=3, cout=2, k=4, s=2, p=1, act="silu", bn=False, latent=0, seed=0):
    layer = ConvTransposeBlock(be, cin, cout, k, s, p, be.rng(seed), act, bn, latent)
    randomise_params(layer.params, np.random.default_rng(seed + 1))
    return layer


def randomise_params(params, rng):
    """Move every parameter away from its initialisation (non-trivial checks)."""
    for v in params.values():
        v += 0.3 * rng.standard_normal(v.shape)


def _small_gen(be, latent_concat=False, batchnorm=False, act="silu", seed=0):
    """Q=3 -> 4 -> 3 -> 2 channels, sizes 1 -> 4 -> 8 -> 8 (k 4, 4, 3; s 1, 2, 1; p 0, 1, 1)."""
    gen = ConvGenerator(be, [3, 4, 3, 2], [4, 4, 3], [1, 2, 1], [0, 1, 1], be.rng(seed), activation=act,
                        batchnorm=batchnorm, latent_concat=latent_concat)
    randomise_params(gen.params, np.random.default_rng(seed + 1))
    return gen


# ---- forward against direct loops ------------------------------------------------------

@pytest.mark.parametrize("k,s,p,H,W", [(4, 1, 0, 1, 1), (4, 2, 1, 3, 2), (3, 1, 1, 4, 4), (8, 1, 0, 1, 1),
                                       (3, 2, 0, 2, 3), (5, 3, 2, 3, 3)])
def test_conv_transpose_matches_direct_loops(be64, k, s, p, H, W):
    layer = ConvTransposeBlock(be64, 3, 2, k, s, p, be64.rng(0), None, False)
    randomise_params(layer.params, np.random.default_rng(1))
    x = np.random.default_rng(2).standard_normal((2, H, W, 3))
    want = ref_conv_transpose(x, layer.params["w"], layer.params["b"], s, p)
    np.testing.assert_allclose(layer.forward(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s", [(4, 2), (3, 2), (3, 1)])
def test_im2col_is_the_adjoint_of_col2im(k, s):
    """<col2im(c), f> = <c, im2col(f)>: the backward gathers exactly what the forward scattered
    (both the phase form, s | k, and the offset-by-offset form)."""
    rng = np.random.default_rng(8)
    c = rng.standard_normal((2, 3, 2, k, k, 2))
    f = rng.standard_normal((2, 2 * s + k, s + k, 2))
    lhs = (col2im(c, np.zeros_like(f), s) * f).sum()
    np.testing.assert_allclose(lhs, (c * im2col(f, np.empty_like(c), s)).sum(), rtol=1e-12)


@pytest.mark.parametrize("latent_concat", [False, True])
def test_generator_matches_direct_loops_in_chw_order(be64, latent_concat):
    gen = _small_gen(be64, latent_concat=latent_concat, act="leakyrelu")
    h = np.random.default_rng(3).standard_normal((3, 3))
    np.testing.assert_allclose(gen.forward(h), ref_generator(gen, h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("preset,hidden,strides,pads,shape", [
    ("svhn", "128,64,32", "1,2,2,2", "0,1,1,1", (3, 32, 32)),
    ("celeba", "256,128,64,32", "1,2,2,2,2", "0,1,1,1,1", (3, 64, 64))])
def test_reference_architectures_produce_the_image_size(be64, preset, hidden, strides, pads, shape):
    """Spec §5: 81 -> 128 -> 64 -> 32 -> 3 (SVHN) and 81 -> 256 -> ... -> 3 (CelebA), kernel 4."""
    n = len(strides.split(","))
    cfg = load_config("mnist", overrides=[
        "EbmModel.layer_widths=40,81", "GeneratorModel.widths=81,162", "CNN.use_cnn_lkhood=true",
        f"CNN.hidden_feature_dims={hidden}", f"CNN.strides={strides}", f"CNN.paddings={pads}",
        f"CNN.kernel_sizes={','.join(['4'] * n)}"])
    m = KAEM(cfg, shape, be64, seed=0)
    assert generator_kind(cfg) == "cnn"
    assert m.generator.sizes == [1, 4, 8, 16, 32] + ([64] if preset == "celeba" else [])
    assert [layer.cout for layer in m.generator.layers] == [int(c) for c in hidden.split(",")] + [3]
    assert m.decode(m.sample_prior(2, be64.rng(0))).shape == (2, int(np.prod(shape)))


# ---- finite differences -----------------------------------------------------------------

def check_grad_or_zero(loss, p, grad, zero, name):
    """check_grad, or, for a conv bias followed by training-mode batch norm (which removes
    any per-channel shift, so the exact gradient is 0), that both gradients vanish."""
    if not zero:
        check_grad(loss, p, grad, name=name)
        return
    assert np.abs(grad).max() < 1e-12, name
    before, saved = float(loss()), p.copy()
    p += 0.5  # a shifted bias changes nothing
    after = float(loss())
    p[...] = saved
    assert abs(after - before) <= 1e-9 * max(1.0, abs(before)), name


@pytest.mark.parametrize("bn,training", [(False, True), (True, True), (True, False)])
@pytest.mark.parametrize("latent", [0, 2])
def test_block_gradients(be64, bn, training, latent):
    """Σ R·y w.r.t. w, b, γ, β, the input x and the concatenated latent h."""
    layer = _block(be64, bn=bn, latent=latent)
    if bn:
        layer.buffers["bn_mean"][...] = [0.3, -0.2]
        layer.buffers["bn_var"][...] = [0.7, 1.6]
    rng = np.random.default_rng(4)
    x, h = rng.standard_normal((3, 3, 2, 3)), rng.standard_normal((3, 2)) if latent else None
    R = rng.standard_normal((3, 6, 4, 2))

    def loss():
        return (R * layer.forward(x, h, training=training)).sum()

    loss()
    layer.zero_grad()
    dx, dh = layer.backward(R)
    for name, p in layer.params.items():
        check_grad_or_zero(loss, p, layer.grads[name].copy(), zero=bn and training and name == "b", name=name)
    check_grad(loss, x, dx, name="x")
    if latent:
        check_grad(loss, h, dh, name="h")


@pytest.mark.parametrize("latent_concat", [False, True])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_generator_gradients(be64, latent_concat, batchnorm):
    """Every parameter and h through the whole stack (batch norm in training mode)."""
    gen = _small_gen(be64, latent_concat, batchnorm)
    rng = np.random.default_rng(5)
    h, R = rng.standard_normal((4, 3)), rng.standard_normal((4, 2 * 8 * 8))

    def loss():
        return (R * gen.forward(h)).sum()

    loss()
    gen.zero_grad()
    dh = gen.backward(R)
    grads = {k: v.copy() for k, v in gen.grads.items()}
    last = len(gen.layers) - 1
    for name, p in gen.params.items():
        before_bn = batchnorm and name.endswith(".b") and int(name.split(".")[0]) < last
        check_grad_or_zero(loss, p, grads[name], zero=before_bn, name=name)
    check_grad(loss, h, dh, name="h")
    gen.zero_grad()
    gen.forward(h)
    assert gen.backward(R, need_dh=False) is None and all(np.array_equal(gen.grads[k], grads[k]) for k in grads)
    gen.zero_grad()
    gen.forward(h)
    np.testing.assert_allclose(gen.backward(R, need_params=False), dh, rtol=1e-12)
    assert all(not g.any() for g in gen.grads.values())


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_loglik_gradient_through_the_model(be64, kind):
    """Per-chain log p(x_n|z_n) w.r.t. every generator parameter and the latent z, as the
    samplers and losses use it (injection noise fixed)."""
    extra = (["CNN.use_cnn_lkhood=true", "CNN.hidden_feature_dims=3", "CNN.strides=1,2",
              "CNN.kernel_sizes=3,4", "CNN.paddings=0,1", "CNN.activation=gelu", "CNN.latent_concat=true"]
             if kind == "cnn" else ["MLP.use_mlp_lkhood=true", "MLP.activation=tanh"])
    m = KAEM(tiny_config(*extra, PAIR), (2, 6, 6), be64, seed=0)
    randomise(m, be64.rng(1))
    rng = be64.rng(2)
    N = 3
    x, z = rng.random((N, m.D)), m.sample_prior(N, rng)
    noise, r = rng.standard_normal((N, m.D)), rng.standard_normal(N)

    def loss():
        return (r * m.lik.log_lik_rows(x, m.generator.forward(m.prior.to_input(z)), noise=noise)).sum()

    loss()
    m.zero_grad()
    dh = m.generator.backward(m.lik.backward_rows(r))
    grads = {k: v.copy() for k, v in m.gradients().items() if k.startswith("gen.")}
    for name, p in m.parameters().items():
        if name.startswith("gen."):
            check_grad(loss, p, grads[name], name=name)
    check_grad(loss, z, m.prior.input_grad(dh), name="z")


def test_mlp_matches_numpy_and_gradients(be64):
    gen = MLPGenerator(be64, [3, 5, 4, 6], be64.rng(0), activation="silu")
    rng = np.random.default_rng(6)
    randomise_params(gen.params, rng)
    h, R = rng.standard_normal((4, 3)), rng.standard_normal((4, 6))
    p = gen.params
    a = h
    for i in range(3):
        a = a @ p[f"{i}.w"] + p[f"{i}.b"]
        if i < 2:
            a = a / (1 + np.exp(-a))
    np.testing.assert_allclose(gen.forward(h), a, rtol=1e-12)

    def loss():
        return (R * gen.forward(h)).sum()

    loss()
    dh = gen.backward(R)
    grads = {k: v.copy() for k, v in gen.grads.items()}
    for name, arr in gen.params.items():
        check_grad(loss, arr, grads[name], name=name)
    check_grad(loss, h, dh, name="h")


# ---- batch norm: running statistics, eval mode, checkpoints -------------------------------

def test_batchnorm_running_statistics_follow_the_batch(be64):
    """Repeated training-mode passes over one batch: running mean -> batch mean, running
    variance -> unbiased batch variance, geometrically with rate 1 − momentum."""
    x = np.random.default_rng(7).normal(2.0, 3.0, (5, 4, 4, 3))
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(300):
        batchnorm_forward(x, np.ones(3), np.zeros(3), mean, var, training=True)
    flat = x.reshape(-1, 3)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(var, flat.var(0, ddof=1), rtol=1e-10)
    y, _ = batchnorm_forward(x, np.ones(3), np.zeros(3), mean, var, training=False)
    np.testing.assert_allclose(y.reshape(-1, 3).mean(0), 0, atol=1e-12)


def test_eval_mode_decouples_samples_and_survives_a_checkpoint(be64, tmp_path):
    cfg = tiny_config("CNN.use_cnn_lkhood=true", "CNN.hidden_feature_dims=3", "CNN.strides=1,2",
                      "CNN.kernel_sizes=3,4", "CNN.paddings=0,1", "CNN.batchnorm=true")
    m = KAEM(cfg, (1, 6, 6), be64, seed=0)
    rng = be64.rng(1)
    for _ in range(3):  # training-mode passes move the running statistics
        m.generator.forward(m.prior.to_input(m.sample_prior(8, rng)))
    assert not np.allclose(m.buffers()["gen.0.bn_mean"], 0)
    z = m.sample_prior(6, rng)
    train_alone = m.generator.forward(m.prior.to_input(z[:1]), cache=False)
    train_batch = m.generator.forward(m.prior.to_input(z), cache=False)
    assert not np.allclose(train_alone, train_batch[:1])  # batch statistics couple samples
    with m.evaluating():
        alone, batch = m.decode(z[:1]), m.decode(z)
    np.testing.assert_allclose(alone, batch[:1], rtol=1e-12)
    assert m.generator.training
    path = str(tmp_path / "c.npz")
    save_checkpoint(path, m.parameters(), m.buffers(), {}, config_to_ini(cfg),
                    {"data_shape": [1, 6, 6], "seed": 0})
    m2 = restore_model(load_checkpoint(path), be64)
    with m2.evaluating():
        np.testing.assert_array_equal(m2.decode(z), batch)


# ---- configuration -----------------------------------------------------------------------

def test_output_size_mismatch_is_a_config_error(be64):
    cfg = load_config("mnist", overrides=["CNN.use_cnn_lkhood=true"])  # SVHN stack: 32×32
    with pytest.raises(ConfigError, match=r"1 -> 4 -> 8 -> 16 -> 32 .* data are 28×28"):
        KAEM(cfg, (1, 28, 28), be64)


@pytest.mark.parametrize("overrides,match", [
    (["CNN.use_cnn_lkhood=true", "CNN.strides=1,2,2"], r"CNN.strides = 1, 2, 2 has 3 entries.*needs 4"),
    (["CNN.use_cnn_lkhood=true", "MLP.use_mlp_lkhood=true"], "choose one generator"),
    (["CNN.activation=relu6"], "bad value 'relu6' for CNN.activation"),
])
def test_config_checks(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("mnist", overrides=overrides)
