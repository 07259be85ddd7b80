"""Bidirectional Monte Carlo (kaem/evaluation/bdmc.py): on data simulated from the model,
forward AIS is a stochastic lower bound and reverse AIS from the true latent an upper bound
of the exact log p(x): lower ≤ exact ≤ upper within their standard errors (fixed seeds)."""
from __future__ import annotations

import numpy as np
import pytest

import ais_exact
from ais_exact import deep_2d, linear_gaussian, mean_se, mixture_2d, univariate_2d
from kaem.evaluation.anneal import schedule
from kaem.evaluation.bdmc import bdmc, bidirectional, simulate
from kaem.evaluation.paths import ITSLatent, ITSPath


def assert_sandwich(lower: np.ndarray, upper: np.ndarray, exact: np.ndarray) -> None:
    lo, lo_se = mean_se(lower - exact)
    up, up_se = mean_se(upper - exact)
    assert lo <= 2 * lo_se, ("lower bound above the exact value", lo, lo_se)
    assert up >= -2 * up_se, ("upper bound below the exact value", up, up_se)


@pytest.mark.parametrize("refresh", [0, 2])
def test_bdmc_linear_gaussian_sandwiches_the_exact_evidence(refresh):
    B, C = 60, 16
    tg, path, z = linear_gaussian(B, seed=3)
    r = bidirectional(path, z, schedule(200), C, np.random.default_rng(1), n_leapfrog=1, refresh=refresh)
    exact = tg.log_evidence()
    assert_sandwich(r["lower"], r["upper"], exact)
    gap, gap_se = mean_se(r["upper"] - r["lower"])
    assert gap >= -2 * gap_se
    # with one annealing step both are plain importance sampling: a wide sandwich, same law
    r1 = bidirectional(path, z, schedule(1), C, np.random.default_rng(1), n_leapfrog=1, refresh=refresh)
    assert_sandwich(r1["lower"], r1["upper"], exact)
    assert (r1["upper"] - r1["lower"]).mean() > 10 * gap


@pytest.mark.parametrize("make", [univariate_2d, mixture_2d], ids=["univariate", "mixture"])
def test_bdmc_kaem_2d_sandwiches_the_quadrature(be64, make):
    m = make(be64)
    with m.evaluating():
        lat = ITSLatent(m.prior)
        x, eps = simulate(m, 30, np.random.default_rng(4), lat)
        exact = ais_exact.its_exact(m, x, lat)
        r = bidirectional(ITSPath(m, x, lat), eps, schedule(100), 16, np.random.default_rng(5), n_leapfrog=1)
    assert_sandwich(r["lower"], r["upper"], exact)


def test_bdmc_report(be64):
    m = univariate_2d(be64)
    r = bdmc(m, 5, rng=np.random.default_rng(0), temps=20, chains=4, n_leapfrog=2, max_chains=8)
    for k in ("bdmc_lower_nats", "bdmc_upper_nats", "bdmc_gap_nats", "bdmc_lower_se", "bdmc_upper_se", "bdmc_gap_se"):
        assert np.isfinite(r[k]), k
    assert r["bdmc_gap_nats"] == pytest.approx(r["bdmc_upper_nats"] - r["bdmc_lower_nats"])
    assert len(r["bdmc_lower_per_image"]) == len(r["bdmc_upper_per_image"]) == r["bdmc_n"] == 5


def test_bdmc_refuses_the_deep_prior_and_bad_settings(be64):
    with pytest.raises(ValueError, match="deep"):
        bdmc(deep_2d(be64), 4, rng=np.random.default_rng(0), temps=5, chains=2)
    with pytest.raises(ValueError, match="bdmc images"):
        bdmc(univariate_2d(be64), 0, rng=np.random.default_rng(0), temps=5, chains=2)
