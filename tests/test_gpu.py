"""CPU/GPU parity: the hand-written forward and backward passes, the likelihood in both
noise-sharing modes, the objectives and the grid refit, run on the device backend and on
numpy with the same parameters and inputs, must agree in float64; the training steps and
the evaluation must run there and stay finite.

Skipped unless ``KAEM_TEST_DEVICE`` names a device: ``gpu`` (cupy; ``make gpu-check``) or
``sim`` (the sync-counting numpy device of tests/syncbackend.py, to develop these tests on
a machine without a GPU). The rest of the suite runs on numpy: it checks against numpy and
scipy references, and finite differences, which is what the parity here carries over.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import randomise, tiny_config
from kaem.backend import BackendError, get_backend, to_numpy
from kaem.nn.bases import BASES
from kaem.objectives.importance import is_loss_and_grad, is_step
from kaem.nn.kan import KANLayer, KANSpec
from kaem.objectives import langevin_loss_and_grad, thermo_loss_and_grad, training_step
from kaem.evaluation.heldout import evaluate
from kaem.model import KAEM
from kaem.numerics import lstsq_batched
from kaem.samplers import temperature_ladder

DEVICE = os.environ.get("KAEM_TEST_DEVICE", "")
CPU = get_backend("cpu", "float64")
RTOL = 1e-9


@pytest.fixture(scope="module")
def dev():
    if DEVICE == "sim":
        from syncbackend import counting_backend

        return counting_backend("float64")
    if DEVICE == "gpu":
        try:
            return get_backend("gpu", "float64")
        except BackendError as e:
            pytest.skip(str(e))
    pytest.skip("CPU/GPU parity: set KAEM_TEST_DEVICE=gpu (make gpu-check) on a machine with cupy")


def close(a, b, rtol=RTOL):
    a, b = np.asarray(to_numpy(a), dtype=np.float64), np.asarray(to_numpy(b), dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    assert np.abs(a - b).max(initial=0.0) <= rtol * scale


def _twin_layer(dev, basis):
    layer = KANLayer(CPU, 3, 4, KANSpec(basis=basis, grid_size=5), CPU.rng(0))
    r = np.random.default_rng(1)
    for p in layer.params.values():
        p += r.normal(0, 0.4, p.shape)
    twin = KANLayer(dev, 3, 4, KANSpec(basis=basis, grid_size=5), dev.rng(0))
    for mine, theirs in ((twin.params, layer.params), (twin.buffers, layer.buffers)):
        for k, v in theirs.items():
            if v is not None:
                mine[k][...] = dev.asarray(v)
    return layer, twin


@pytest.mark.parametrize("basis", sorted(BASES))
def test_kan_layer_both_forms(dev, basis):
    layer, twin = _twin_layer(dev, basis)
    r = np.random.default_rng(2)
    x, dy = r.uniform(-1.3, 1.3, (6, 3)), r.normal(size=(6, 4))
    z, df = r.uniform(-1.3, 1.3, (6, 4, 3)), r.normal(size=(6, 4, 3))
    for lay, be in ((layer, CPU), (twin, dev)):
        lay.zero_grad()
        lay.out = [lay.forward(be.asarray(x)), lay.backward(be.asarray(dy))]
        lay.out += [lay.forward_pointwise(be.asarray(z)), lay.backward_pointwise(be.asarray(df))]
        lay.out += list(lay.derivative_pointwise(be.asarray(z)))
    for a, b in zip(layer.out, twin.out):
        close(a, b)
    for k in layer.grads:
        close(layer.grads[k], twin.grads[k])


def _twin_models(dev, *overrides):
    cfg = tiny_config(*overrides)
    m = KAEM(cfg, (1, 2, 3), CPU, seed=0)
    randomise(m, CPU.rng(1))
    md = KAEM(cfg, (1, 2, 3), dev, seed=0)
    md.load_arrays(m.parameters(), m.buffers())
    return m, md


@pytest.mark.parametrize("sharing", ["pair", "sample"])
def test_objectives_and_their_gradients(dev, sharing):
    """IS, Langevin and thermodynamic losses with the samples, weights and noise fixed."""
    m, md = _twin_models(dev, f"GeneratorModel.noise_sharing={sharing}")
    r = np.random.default_rng(3)
    B, S = 3, 5
    x = r.random((B, m.D))
    z = to_numpy(m.sample_prior(S, CPU.rng(4)))
    zc = to_numpy(m.sample_prior(4, CPU.rng(5)))
    W = r.dirichlet(np.ones(S), size=B)
    noise = r.standard_normal((B, S, m.D) if sharing == "pair" else (S, m.D))
    zl = to_numpy(m.sample_prior(2 * B, CPU.rng(6)))
    nl = r.standard_normal((2 * B, m.D) if sharing == "pair" else (2, m.D))
    zt = to_numpy(m.sample_prior(3 * B, CPU.rng(7))).reshape(3, B, *m.prior.latent_shape)
    nt = r.standard_normal((3, B, m.D) if sharing == "pair" else (3, 1, m.D))
    temps = temperature_ladder(2, 2.0)
    for model, be in ((m, CPU), (md, dev)):
        a = be.asarray
        model.out = [is_loss_and_grad(model, a(x), a(z), lambda ll: a(W), z_cd=a(zc), noise=a(noise))[0]]
        model.out += [dict((k, v.copy()) for k, v in model.gradients().items())]
        model.out += [langevin_loss_and_grad(model, a(x), a(zl), exact_logZ=True, noise=a(nl))[0]]
        model.out += [dict((k, v.copy()) for k, v in model.gradients().items())]
        model.out += [thermo_loss_and_grad(model, a(x), a(zt), temps, "trapezoid", z_cd=a(zt[0]), noise=a(nt))[0]]
        model.out += [dict((k, v.copy()) for k, v in model.gradients().items())]
    for a, b in zip(m.out, md.out):
        if isinstance(a, dict):
            for k in a:
                close(a[k], b[k])
        else:
            close(a, b)


def test_prior_normaliser_and_grid_refit(dev):
    m, md = _twin_models(dev)
    close(m.prior.log_Z(), md.prior.log_Z())
    r = np.random.default_rng(8)
    A, y = r.random((4, 30, 6)), r.normal(size=(4, 30, 2))
    close(lstsq_batched(A, y), lstsq_batched(dev.asarray(A), dev.asarray(y)))
    z = to_numpy(m.sample_prior(40, CPU.rng(9)))
    m.update_grids(z)
    md.update_grids(dev.asarray(z))
    for k, v in m.parameters().items():
        close(v, md.parameters()[k], 1e-7)
    for k, v in m.buffers().items():
        close(v, md.buffers()[k], 1e-7)


@pytest.mark.parametrize("mode", ["is", "ula", "automala", "thermo"])
def test_training_steps_and_evaluation_run(dev, mode):
    ov = {"is": [], "ula": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.iters=3"],
          "automala": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true", "POST_LANGEVIN.iters=3"],
          "thermo": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=3"]}
    _, md = _twin_models(dev, *ov[mode], "TRAINING.importance_sample_size=6")
    rng, state = dev.rng(10), {}
    x = dev.asarray(np.random.default_rng(11).random((4, md.D)))
    for i in range(2):
        loss, diag = training_step(md, x, rng, i, 10, state)
        assert np.isfinite(float(loss))
        assert all(np.isfinite(to_numpy(g)).all() for g in md.gradients().values())
    out = evaluate(md, x, 20, rng)
    assert np.isfinite(out["loglik_nats"]) and np.isfinite(out["test_mse"])
    if mode == "is":
        is_step(md, x, rng)
