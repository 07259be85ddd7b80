"""Small models with an exact log p(x), for the AIS and BDMC tests: the linear-Gaussian
model (closed form) and KAEMs with a 2-dimensional latent, whose log p(x) is brute-force
quadrature.

Each is a tensor-product Gauss–Legendre rule on the pieces where the integrand is smooth, so
a few nodes per piece converge (measured on the test models, the change in any image's
log p(x) when the nodes per piece are raised: univariate 2 -> 3, 6e-9; mixture 2 -> 3, 5e-8;
mixture density 3 -> 5, 3e-12; deep prior against radius 8 with 200 panels, 3e-9 — all far
below the AIS standard errors they are compared with):

* ε-space paths (univariate prior with shared uniforms and P = 2, mixture with Q = 2):
  p(x) = ∫_{[0,1]²} p(x | T(u)) du; T is linear between the CDF knots of every table row
  reading u_s, so the pieces in u_s are cut at the union of those knots;
* the mixture's pointwise density: ∫ π(z) p(x|z) dz over the domain box, cut at the cell edges;
* the deep prior: log ∫ N(z; 0, I) e^{f(z)} p(x|z) dz − log ∫ N(z; 0, I) e^{f(z)} dz on
  [−R, R]² cut into equal panels.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

from conftest import randomise_kan, tiny_config
from kaem.evaluation.anneal import TargetPath
from kaem.model import KAEM
from kaem.numerics import logsumexp
from kaem.samplers import LinearGaussianTarget


def mean_se(d: np.ndarray) -> tuple[float, float]:
    """Mean of per-datum errors and its standard error."""
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.shape[0]))


def linear_gaussian(B: int, seed: int, d: int = 3, D: int = 8, sigma: float = 0.3) -> tuple:
    """z ~ N(0, I_d), x = A z + σ ξ: the target and its path (data simulated from the model)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((D, d))
    z = rng.standard_normal((B, d))
    x = z @ A.T + sigma * rng.standard_normal((B, D))
    tg = LinearGaussianTarget(A, x, sigma)
    return tg, TargetPath(tg, lambda n, r: r.standard_normal((n, d)), B, (d,), normal_base=True), z


def univariate_2d(be, seed: int = 0, sigma: float = 0.05) -> KAEM:
    """Univariate prior P = 2, Q = 2 with shared uniforms (a 2-dimensional ε), generator
    2 -> 5 -> 12, prior functions far from their initialisation."""
    cfg = tiny_config("EbmModel.layer_widths=2,2", "GeneratorModel.widths=2,5",
                      f"GeneratorModel.generator_variance={sigma}")
    m = KAEM(cfg, (1, 3, 4), be, seed=seed)
    randomise_kan(m.prior.layer.params, seed + 1)
    return m


def mixture_2d(be, seed: int = 0, sigma: float = 0.05) -> KAEM:
    """Mixture prior Q = 2, P = 3 components, trained (non-uniform) proportions."""
    cfg = tiny_config("MixtureModel.use_mixture_prior=true", "MixtureModel.train_proportions=true",
                      "EbmModel.layer_widths=3,2", "GeneratorModel.widths=2,5",
                      f"GeneratorModel.generator_variance={sigma}")
    m = KAEM(cfg, (1, 3, 4), be, seed=seed)
    randomise_kan(m.prior.layer.params, seed + 1)
    m.prior.mix_params["logits"][...] = np.random.default_rng(seed + 2).normal(0.0, 1.0, (2, 3))
    return m


def deep_2d(be, seed: int = 0, sigma: float = 0.1) -> KAEM:
    """Deep prior on z ∈ R² (KAN energy 2 -> 4 -> 1), parameters moved off their init."""
    cfg = tiny_config("EbmModel.layer_widths=2,4,1", "GeneratorModel.widths=2,5",
                      f"GeneratorModel.generator_variance={sigma}")
    m = KAEM(cfg, (1, 3, 4), be, seed=seed)
    r = np.random.default_rng(seed + 7)
    for v in m.prior.params.values():
        v += 0.5 * r.standard_normal(v.shape)
    return m


def _pieces(breaks: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on every interval between sorted breakpoints."""
    xi, wi = np.polynomial.legendre.leggauss(nodes)
    b = np.unique(breaks)
    a, c = b[:-1], b[1:]
    keep = c > a
    a, c = a[keep], c[keep]
    half = 0.5 * (c - a)
    return ((a + half)[:, None] + half[:, None] * xi[None]).ravel(), (half[:, None] * wi[None]).ravel()


def _grid(axes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    (x1, w1), (x2, w2) = axes
    X1, X2 = np.meshgrid(x1, x2, indexing="ij")
    return np.stack([X1.ravel(), X2.ravel()], axis=1), np.log(np.outer(w1, w2).ravel())


def _log_integral(log_f, points: np.ndarray, log_w: np.ndarray, chunk: int = 20000) -> np.ndarray:
    """log Σ_j w_j f(points_j) with log_f(points) -> (B, n)."""
    return logsumexp(np.concatenate([log_f(points[i:i + chunk]) + log_w[None, i:i + chunk]
                                     for i in range(0, points.shape[0], chunk)], axis=1), axis=1)


def _lik(model, x, z):
    g = model.generator.forward(model.prior.to_input(z), cache=False)
    return model.lik.log_density_matrix(x, g)  # (B, n)


def its_exact(model, x, latent, nodes: int = 2) -> np.ndarray:
    """log p(x_b) (B,) for an ε-space model with two ε entries (``ITSLatent``)."""
    S = int(np.prod(latent.eps_shape))
    assert S == 2, "the brute-force rule is 2-dimensional"
    R = latent.cdf.shape[0]
    axes = [_pieces(np.concatenate([latent.cdf[r] for r in range(R) if r % S == s] + [[0.0, 1.0]]), nodes)
            for s in range(S)]
    u, log_w = _grid(axes)

    def log_f(uu):
        eps = ndtri(uu).reshape((-1,) + latent.eps_shape)
        return _lik(model, x, latent.forward(eps)[0])

    return _log_integral(log_f, u, log_w)


def mixture_density_exact(model, x, path, nodes: int = 3) -> np.ndarray:
    """log ∫ π(z) p(x_b|z) dz (B,) with the pointwise mixture density (Q = 2)."""
    axes = [_pieces(path.map.edges[q], nodes) for q in range(2)]
    z, log_w = _grid(axes)
    return _log_integral(lambda zz: path.log_prior(zz)[0][None] + _lik(model, x, zz), z, log_w)


def deep_exact(model, x, radius: float = 6.0, panels: int = 60, nodes: int = 4) -> np.ndarray:
    """log p(x_b) (B,) for the deep prior with Q = 2: the joint integral minus log Z."""
    prior = model.prior
    axes = [_pieces(np.linspace(-radius, radius, panels + 1), nodes)] * 2
    z, log_w = _grid(axes)

    def log_base(zz):
        return prior.log_pi0(zz) + prior.log_tilt(zz)

    log_Z = _log_integral(lambda zz: log_base(zz)[None], z, log_w)[0]
    return _log_integral(lambda zz: log_base(zz)[None] + _lik(model, x, zz), z, log_w) - log_Z
