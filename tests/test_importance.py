"""Importance-sampling objective: full-loss gradient check, weights, ESS and resamplers."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import PAIR, randomise, tiny_config
from gradcheck import check_grad
from kaem.objectives.importance import is_loss_and_grad, is_step
from kaem.model import KAEM
from kaem.objectives.resampling import RESAMPLERS, ess, importance_weights


@pytest.mark.parametrize("cd", [True, False], ids=["contrastive", "exact-logZ"])
@pytest.mark.parametrize("basis", ["RBF", "B-spline"])
def test_full_is_loss_gradient(be64, cd, basis):
    """Every parameter of prior and generator, with samples, noise and weights held fixed."""
    m = KAEM(tiny_config(PAIR, basis=basis), (1, 2, 3), be64, seed=1)
    rng = be64.rng(3)
    randomise(m, rng)
    B, S = 4, 7
    x, z = rng.random((B, m.D)), m.sample_prior(S, rng)
    z_cd = m.sample_prior(5, rng) if cd else None
    noise = rng.standard_normal((B, S, m.D))
    W = rng.dirichlet(np.ones(S), size=B)  # dense, so every (b, s) pair is exercised

    def loss():
        return is_loss_and_grad(m, x, z, lambda ll: W, z_cd=z_cd, exact_logZ=not cd, noise=noise)[0]

    loss()
    grads = {k: v.copy() for k, v in m.gradients().items()}
    for name, p in m.parameters().items():
        check_grad(loss, p, grads[name], name=name)


def test_loss_value_matches_formula(be64):
    m = KAEM(tiny_config(PAIR), (1, 2, 3), be64, seed=2)
    rng = be64.rng(4)
    x, z, zc = rng.random((3, m.D)), m.sample_prior(6, rng), m.sample_prior(8, rng)
    noise = rng.standard_normal((3, 6, m.D))
    W = rng.dirichlet(np.ones(6), size=3)
    loss, ll, _ = is_loss_and_grad(m, x, z, lambda ll: W, z_cd=zc, noise=noise)
    lp, lpc = m.prior.log_unnorm(z, cache=False), m.prior.log_unnorm(zc, cache=False)
    want = -(W * (lp[None] + ll)).sum() / 3 + lpc.mean()
    assert abs(float(loss) - want) < 1e-10 * abs(want)


def test_weights_are_softmax_when_ess_is_high(be64):
    """No resampling above the threshold: weights equal softmax(ll) exactly."""
    rng = be64.rng(0)
    ll = 0.01 * rng.standard_normal((5, 50))  # nearly flat: ESS ≈ S
    w, e, low = importance_weights(ll.copy(), 0.5, "residual", rng)
    soft = np.exp(ll - ll.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    assert not low.any()
    np.testing.assert_allclose(w, soft, rtol=1e-12)
    np.testing.assert_allclose(e, ess(soft))


def test_low_ess_rows_are_resampled(be64):
    rng = be64.rng(1)
    ll = np.stack([np.zeros(20), 30 * rng.standard_normal(20)])  # row 0 flat, row 1 degenerate
    w, e, low = importance_weights(ll, 0.5, "systematic", rng)
    assert low.tolist() == [False, True]
    counts = w[1] * 20
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-12)  # counts/S
    np.testing.assert_allclose(w.sum(1), 1.0)


@pytest.mark.parametrize("name", sorted(RESAMPLERS))
def test_resampler_counts_are_unbiased(be64, name):
    """E[counts] = S·w. Over T independent draws the mean count of each index has standard
    error ≤ sqrt(S·w(1−w)/T) (multinomial variance; residual/systematic/stratified have
    less); assert every index within 5 such standard errors."""
    rng = be64.rng(11)
    S, R, T = 10, 4, 4000
    w = rng.dirichlet(0.7 * np.ones(S), size=R)
    total = np.zeros((R, S))
    for _ in range(T):  # T independent resampling calls: the statistic, not a hot loop
        c = RESAMPLERS[name](w, rng)
        assert (c.sum(1) == S).all() and (c >= 0).all()
        total += c
    mean = total / T
    se = np.sqrt(S * w * (1 - w) / T)
    assert (np.abs(mean - S * w) <= 5 * se + 1e-12).all()


def test_residual_keeps_deterministic_copies(be64):
    rng = be64.rng(2)
    w = np.array([[0.55, 0.3, 0.15, 0.0]])
    for _ in range(50):
        c = RESAMPLERS["residual"](w, rng)
        assert (c >= np.floor(4 * w)).all() and c[0, 3] == 0


def test_is_step_runs_and_fills_gradients(be64):
    m = KAEM(tiny_config("TRAINING.importance_sample_size=16"), (1, 2, 3), be64, seed=0)
    rng = be64.rng(0)
    loss, diag = is_step(m, rng.random((5, m.D)), rng)
    assert np.isfinite(float(loss)) and 1 <= float(diag["ess"]) <= 16
    assert all(np.isfinite(g).all() for g in m.gradients().values())
    assert any(np.abs(g).sum() > 0 for g in m.gradients().values())
