"""Generator + Gaussian likelihood: float64 finite-difference checks w.r.t. parameters and z."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import PAIR, randomise, tiny_config
from gradcheck import check_grad
from kaem.likelihood.gaussian import GaussianLikelihood, apply_output_activation
from kaem.model import KAEM

OUT_ACTS = ("sigmoid", "tanh", "none")


def _model(be, out_act, basis="RBF", seed=0):
    cfg = tiny_config(f"GeneratorModel.output_activation={out_act}", PAIR, basis=basis)
    m = KAEM(cfg, (1, 2, 3), be, seed=seed)
    randomise(m, be.rng(seed + 1))
    return m


@pytest.mark.parametrize("out_act", OUT_ACTS)
@pytest.mark.parametrize("basis", ["RBF", "B-spline"])
def test_pairs_loglik_gradients(be64, out_act, basis):
    """Σ_bs R[b,s]·ll[b,s] w.r.t. every generator parameter, with fixed injection noise."""
    m = _model(be64, out_act, basis)
    rng = be64.rng(5)
    B, S, D = 3, 4, m.D
    x, z = rng.random((B, D)), m.sample_prior(S, rng)
    noise, R = rng.standard_normal((B, S, D)), rng.standard_normal((B, S))

    def loss():
        g = m.generator.forward(m.prior.to_input(z))
        return (R * m.lik.log_lik_pairs(x, g, noise=noise)).sum()

    m.zero_grad()
    loss()
    m.generator.backward(m.lik.backward_pairs(R), need_dh=False)
    grads = {k: v.copy() for k, v in m.gradients().items() if k.startswith("gen.")}
    for name, p in m.parameters().items():
        if name.startswith("gen."):
            check_grad(loss, p, grads[name], name=name)


@pytest.mark.parametrize("out_act", OUT_ACTS)
def test_rows_loglik_gradient_wrt_z(be64, out_act):
    """Per-chain log p(x_n|z_n) w.r.t. the latent z (N, Q, P) — what Langevin samplers need."""
    m = _model(be64, out_act)
    rng = be64.rng(7)
    N = 5
    x, z = rng.random((N, m.D)), m.sample_prior(N, rng)
    noise, r = rng.standard_normal((N, m.D)), rng.standard_normal(N)

    def loss():
        g = m.generator.forward(m.prior.to_input(z))
        return (r * m.lik.log_lik_rows(x, g, noise=noise)).sum()

    loss()
    dh = m.generator.backward(m.lik.backward_rows(r))
    check_grad(loss, z, m.prior.input_grad(dh), name="z")


def test_sparse_pair_backward_equals_dense(be64):
    """backward_pairs gathers only pairs with nonzero weight; compare with the dense formula."""
    m = _model(be64, "sigmoid")
    rng = be64.rng(9)
    x, z = rng.random((4, m.D)), m.sample_prior(6, rng)
    g = m.generator.forward(m.prior.to_input(z))
    noise = rng.standard_normal((4, 6, m.D))
    m.lik.log_lik_pairs(x, g, noise=noise)
    dll = rng.standard_normal((4, 6)) * (rng.random((4, 6)) < 0.4)  # mostly zeros
    y = apply_output_activation("sigmoid", g[None] + m.lik.noise * noise)
    dense = ((dll[..., None] * (x[:, None] - y) * y * (1 - y)).sum(0)) / m.lik.sigma ** 2
    np.testing.assert_allclose(m.lik.backward_pairs(dll), dense, rtol=1e-12, atol=1e-12)


def test_log_density_matrix_is_the_gaussian_density(be64):
    lik = GaussianLikelihood(sigma=0.3, noise=0.1, out_act="sigmoid")
    rng = be64.rng(2)
    x, g = rng.random((3, 7)), rng.standard_normal((5, 7))
    y = 1 / (1 + np.exp(-g))
    from scipy.stats import multivariate_normal

    want = np.array([[multivariate_normal(y[s], 0.09 * np.eye(7)).logpdf(x[b]) for s in range(5)] for b in range(3)])
    np.testing.assert_allclose(lik.log_density_matrix(x, g), want, rtol=1e-10)
