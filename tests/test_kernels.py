"""The speed kernels (kaem/kernels) against the reference path.

* every registered kernel has an equality case here (float64, random non-trivial inputs,
  with several CPU threads): outputs and accumulated gradients of the fast and the reference
  path agree to rounding;
* whole training runs: 3 iterations of every objective (is, ula, automala, thermo, and the
  pair noise sharing and the mixture prior) with Adam give the same losses and parameters on
  both paths to 1e-10 relative;
* ``KAEM_KERNELS`` picks the path and an unknown value is refused.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from conftest import randomise_kan, tiny_config
from gradcheck import rel_error
from kaem import kernels
from kaem.backend import get_backend
from kaem.config import load_config
from kaem.likelihood.gaussian import GaussianLikelihood
from kaem.model import KAEM
from kaem.nn.kan import KANLayer, KANSpec
from kaem.objectives import objective_mode, training_step
from kaem.build import make_optimizer
from kaem.priors import UnivariatePrior

BE = get_backend("cpu", "float64")
TIGHT = 1e-12  # one computation, sums in another order


def _layer(basis: str = "RBF", seed: int = 0, in_dim: int = 5, out_dim: int = 3) -> KANLayer:
    layer = KANLayer(BE, in_dim, out_dim, KANSpec(basis=basis, grid_size=6), BE.rng(seed))
    randomise_kan(layer.params, 50 + seed)
    return layer


def _grads(obj: Any) -> dict:
    return {k: v.copy() for k, v in obj.grads.items()}


# Each case builds fresh objects from a seed and returns what the function computed: its
# outputs and the gradients it accumulated (a list of arrays), on whichever path is active.
def _spline_weights(seed: int) -> list:
    layer = _layer(seed=seed)
    return [layer.spline_weights()]


def _network_weights(seed: int) -> list:
    layer = _layer(seed=seed)
    return [layer.network_weights()]


def _accumulate_weight_grads(seed: int) -> list:
    layer = _layer(seed=seed)
    dW = np.random.default_rng(seed).normal(size=layer.params["coef"].shape)
    layer.accumulate_weight_grads(dW)
    layer.accumulate_weight_grads(dW.transpose(1, 0, 2).copy().transpose(1, 0, 2))  # another layout
    return list(_grads(layer).values())


def _network_weight_grads(seed: int) -> list:
    layer = _layer(seed=seed)
    r = np.random.default_rng(seed)
    x, dy = r.uniform(-1.3, 1.3, (9, layer.in_dim)), r.normal(size=(9, layer.out_dim))
    layer.forward(x)
    dx = layer.backward(dy)
    return [dx, *_grads(layer).values()]


def _weighted_pointwise(seed: int) -> list:
    layer = _layer(seed=seed)
    r = np.random.default_rng(seed)
    z, d = r.uniform(-1.5, 1.5, (13, 3, 5)), r.normal(size=13)
    return [layer.weighted_pointwise(z, d), *_grads(layer).values()]


def _derivative_pointwise(seed: int) -> list:
    out = []
    for basis in ("RBF", "FFT", "B-spline"):
        layer = _layer(basis, seed=seed)
        z = np.random.default_rng(seed).uniform(-1.5, 1.5, (21, 3, 5))
        out += list(layer.derivative_pointwise(z))
    return out


def _pairs(seed: int) -> list:
    r = np.random.default_rng(seed)
    x, g, dll = r.random((4, 7)), r.normal(size=(9, 7)), r.normal(size=(4, 9))
    lik = GaussianLikelihood(0.3, 0.2, "sigmoid", "pair")
    rng = np.random.default_rng(seed + 1)
    ll = lik.log_lik_pairs(x, g, rng=rng)
    return [ll, lik.backward_pairs(dll), rng.random(3)]  # the draws that follow: the same stream position


def _generator_backward(seed: int) -> list:
    m = KAEM(tiny_config(), (1, 3, 3), BE, seed=seed)
    r = np.random.default_rng(seed)
    h, dg = r.normal(size=(12, 4)), r.normal(size=(12, 9))
    dg[[1, 4, 5]] = 0.0
    m.generator.forward(h)
    m.generator.backward(dg, need_dh=False)
    return list(_grads(m.generator).values())


def _prior(seed: int, pi0: str = "learnable_gaussian") -> UnivariatePrior:
    prior = UnivariatePrior(BE, 3, 4, KANSpec(basis="RBF", grid_size=5), BE.rng(seed), pi0=pi0)
    randomise_kan(prior.params, seed + 3)
    for v in prior.pi0.params.values():
        v[...] = np.random.default_rng(seed).normal(0.0, 0.3, v.shape)
    return prior


def _weighted_log_energy(seed: int) -> list:
    prior = _prior(seed)
    r = np.random.default_rng(seed)
    z, d = r.uniform(-1.2, 1.2, (11, 4, 3)), r.normal(size=11)
    d[[0, 3, 7]] = 0.0
    return [prior.weighted_log_energy(z, d), *_grads(prior).values()]


def _sample(seed: int) -> list:
    return [_prior(seed).sample(40, BE.rng(seed)), UnivariatePrior(BE, 3, 17, KANSpec(), BE.rng(seed),
                                                                  shared_uniform=False).sample(30, BE.rng(seed))]


def _optimizer(seed: int) -> list:
    r = np.random.default_rng(seed)
    p = {"a": r.normal(size=(300, 7)), "b": r.normal(size=(5,)), "c": r.normal(size=(6, 40)).T}
    opt = make_optimizer(p, load_config("mnist")["OPTIMIZER"])
    for _ in range(3):
        opt.step({k: r.normal(size=v.shape) for k, v in p.items()})
    return list(p.values())


CASES: dict[str, Callable[[int], list]] = {
    "KANLayer.spline_weights": _spline_weights,
    "KANLayer.network_weights": _network_weights,
    "KANLayer.accumulate_weight_grads": _accumulate_weight_grads,
    "KANLayer.network_weight_grads": _network_weight_grads,
    "KANLayer.weighted_pointwise": _weighted_pointwise,
    "KANLayer.derivative_pointwise": _derivative_pointwise,
    "GaussianLikelihood.log_lik_pairs_per_pair": _pairs,
    "LayerStack.backward": _generator_backward,
    "QuadratureDensities.weighted_log_energy": _weighted_log_energy,
    "UnivariatePrior.sample": _sample,
    "Optimizer.apply": _optimizer,
}


def test_every_kernel_has_an_equality_case_and_a_reference():
    kernels.load()
    assert set(CASES) == set(kernels.KERNELS)
    assert set(kernels.KERNELS) <= set(kernels.REFERENCES)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("threads", ["1", "3"])
def test_kernel_equals_its_reference(name, threads, monkeypatch):
    monkeypatch.setenv("KAEM_THREADS", threads)
    with kernels.using("reference"):
        want = CASES[name](7)
    with kernels.using("fast"):
        got = CASES[name](7)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert np.shape(a) == np.shape(b), (name, i)
        assert rel_error(a, b) < TIGHT, (name, i, rel_error(a, b))


# ---- whole training runs ----------------------------------------------------------------

RUNS = {
    "is": [],
    "is-pair": ["GeneratorModel.noise_sharing=pair"],
    "is-exact-logZ": ["TRAINING.contrastive_divergence_training=false"],
    "ula": ["POST_LANGEVIN.use_langevin=true"],
    "automala": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true"],
    "thermo": ["THERMODYNAMIC_INTEGRATION.num_temps=3"],
    "thermo-automala": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "POST_LANGEVIN.use_autoMALA=true"],
    "mixture-ula": ["MixtureModel.use_mixture_prior=true", "POST_LANGEVIN.use_langevin=true"],
}


def _train(overrides: list[str], iters: int = 3) -> tuple[list[float], dict]:
    """``iters`` training iterations (the objective's step, then Adam) from fixed seeds; the
    losses and the final parameters. (No grid update: its least-squares refit is
    ill-conditioned, RBF bumps overlap, and would turn the paths' rounding differences of
    1e-16 into 1e-10; the kernels do not touch it.)"""
    cfg = tiny_config("TRAINING.importance_sample_size=12", "POST_LANGEVIN.iters=4",
                      "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=3", *overrides)
    m = KAEM(cfg, (1, 3, 4), BE, seed=0)
    opt = make_optimizer(m.parameters(), cfg["OPTIMIZER"])
    rng, state, losses = BE.rng(1), {}, []
    x = np.random.default_rng(2).random((6, m.D))
    for i in range(iters):
        loss, diag = training_step(m, x, rng, iteration=i, n_updates=10, state=state)
        losses.append(float(loss))
        opt.step(m.gradients())
    return losses, {k: v.copy() for k, v in m.parameters().items()}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_three_iterations_give_the_same_losses_and_parameters_on_both_paths(name, monkeypatch):
    monkeypatch.setenv("KAEM_THREADS", "2")
    assert objective_mode(tiny_config(*RUNS[name])) == name.split("-")[-1 if name.startswith("mixture") else 0]
    with kernels.using("reference"):
        ref_losses, ref_params = _train(RUNS[name])
    with kernels.using("fast"):
        losses, params = _train(RUNS[name])
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10, atol=0)
    for k in ref_params:
        assert rel_error(params[k], ref_params[k]) < 1e-10, (k, rel_error(params[k], ref_params[k]))


# ---- choosing the path -----------------------------------------------------------------

def test_the_environment_picks_the_path_and_refuses_an_unknown_one(monkeypatch):
    monkeypatch.delenv("KAEM_KERNELS", raising=False)
    assert kernels.kernel_mode() == "fast"
    monkeypatch.setenv("KAEM_KERNELS", "reference")
    assert kernels.kernel_mode() == "reference"
    assert kernels.kernel("KANLayer.weighted_pointwise") is None
    monkeypatch.setenv("KAEM_KERNELS", "bogus")
    with pytest.raises(kernels.KernelError, match="KAEM_KERNELS='bogus'.*valid: fast, reference"):
        kernels.kernel_mode()
    layer = _layer()
    with pytest.raises(kernels.KernelError):
        layer.spline_weights()
    with kernels.using("reference"):  # an explicit choice wins over the environment
        layer.spline_weights()
    with pytest.raises(kernels.KernelError, match="unknown kernel path"):
        with kernels.using("turbo"):
            pass


def test_the_reference_path_calls_no_kernel(monkeypatch):
    """With KAEM_KERNELS=reference a training step runs while every kernel raises."""
    kernels.load()

    def boom(*a, **k):
        raise AssertionError("a kernel ran on the reference path")

    for name in list(kernels.KERNELS):
        monkeypatch.setitem(kernels.KERNELS, name, boom)
    monkeypatch.setenv("KAEM_KERNELS", "reference")
    losses, _ = _train(RUNS["thermo"], iters=1)
    assert np.isfinite(losses).all()
    monkeypatch.setenv("KAEM_KERNELS", "fast")
    with pytest.raises(AssertionError, match="a kernel ran"):
        _train(RUNS["is"], iters=1)


def test_the_command_line_refuses_an_unknown_kernel_path(tmp_path):
    """KAEM_KERNELS=bogus: one error line naming the valid paths, exit status 2, nothing written."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KAEM_KERNELS": "bogus"}
    res = subprocess.run([sys.executable, os.path.join(root, "cli.py"), "make-darcy", "--n", "2", "--resolution", "4",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: KAEM_KERNELS='bogus' is not a kernel path; valid: fast, reference"]
    assert not any(tmp_path.iterdir())
