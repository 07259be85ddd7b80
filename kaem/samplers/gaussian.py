"""A linear-Gaussian test target with every posterior quantity in closed form.

Model (d = latent size, D = data size, B data):

    z ~ N(0, v I_d)           (v = prior_var)
    x_b | z ~ N(A z, σ² I_D)  (A of shape (D, d))

Chain → datum mapping: chain i of a population of N chains uses datum b(i) = i % B.
A population laid out as (R, B) or (K, R·B) flattened row-major therefore has datum b
in its last index, as :func:`kaem.samplers.thermo.thermo_sample` needs.

Tempered posterior p_t(z | x_b) ∝ p(x_b|z)^t p(z) is Gaussian with

    Λ_t = I/v + t AᵀA/σ²,    Σ_t = Λ_t⁻¹,    μ_{t,b} = Σ_t · t Aᵀ x_b / σ²

and the evidence is x_b ~ N(0, v A Aᵀ + σ² I).  Closed forms are computed on the host
in float64 (numpy); the target's densities and gradients run on the device of ``x``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from kaem.backend import array_module, to_numpy
from kaem.samplers.target import Array, chain_rows


class LinearGaussianTarget:
    """Implements the :class:`~kaem.samplers.target.Target` protocol.

    Args:
        A: (D, d) linear map.
        x: (B, D) data.
        sigma: observation noise std σ.
        prior_var: prior variance v.
        latent_shape: shape of one latent (prod = d); default (d,). z is (N, *latent_shape).
    """

    def __init__(
        self,
        A: Array,
        x: Array,
        sigma: float,
        prior_var: float = 1.0,
        latent_shape: Sequence[int] | None = None,
    ):
        self.xp = array_module(x)
        self.A = self.xp.asarray(A, dtype=x.dtype)
        self.x = x
        self.sigma = float(sigma)
        self.prior_var = float(prior_var)
        self.D, self.d = self.A.shape
        self.B = x.shape[0]
        self.latent_shape = tuple(latent_shape) if latent_shape is not None else (self.d,)
        if math.prod(self.latent_shape) != self.d:
            raise ValueError("prod(latent_shape) must equal A.shape[1]")
        self._A = to_numpy(self.A).astype(np.float64)
        self._x = to_numpy(x).astype(np.float64)

    # ------------------------------------------------------------- Target protocol

    def _flat(self, z: Array) -> Array:
        return z.reshape(z.shape[0], self.d)

    def log_prior(self, z: Array) -> tuple[Array, Array]:
        """log N(z; 0, vI) (N,) and its gradient −z/v."""
        v = self._flat(z)
        lp = -0.5 * (v * v).sum(axis=1) / self.prior_var - 0.5 * self.d * math.log(
            2 * math.pi * self.prior_var
        )
        return lp, -z / self.prior_var

    def log_lik(self, z: Array) -> tuple[Array, Array]:
        """log N(x_b(i); A z_i, σ²I) (N,) and its gradient Aᵀ(x − Az)/σ²."""
        v = self._flat(z)
        r = chain_rows(self.x, z.shape[0]) - v @ self.A.T  # (N, D)
        s2 = self.sigma**2
        ll = -0.5 * (r * r).sum(axis=1) / s2 - 0.5 * self.D * math.log(2 * math.pi * s2)
        return ll, ((r @ self.A) / s2).reshape(z.shape)

    # ------------------------------------------------------------- closed forms (host)

    def precision(self, t: float) -> np.ndarray:
        """Λ_t = I/v + t AᵀA/σ², (d, d)."""
        return np.eye(self.d) / self.prior_var + t * self._A.T @ self._A / self.sigma**2

    def posterior(self, t: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Mean (B, d) and covariance (d, d, shared by all data) of p_t(z | x_b)."""
        cov = np.linalg.inv(self.precision(t))
        mean = (t / self.sigma**2) * self._x @ self._A @ cov  # cov symmetric
        return mean, cov

    def _log_marginal(self, noise_var: float) -> np.ndarray:
        """log N(x_b; 0, v A Aᵀ + noise_var·I), (B,)."""
        S = self.prior_var * self._A @ self._A.T + noise_var * np.eye(self.D)
        _, logdet = np.linalg.slogdet(S)
        quad = np.einsum("bi,ij,bj->b", self._x, np.linalg.inv(S), self._x)
        return -0.5 * (quad + logdet + self.D * math.log(2 * math.pi))

    def log_evidence(self) -> np.ndarray:
        """Exact log p(x_b), (B,): x_b ~ N(0, v A Aᵀ + σ² I)."""
        return self._log_marginal(self.sigma**2)

    def log_lik_second_moment(self) -> np.ndarray:
        """log E_{p(z)}[p(x_b|z)²], (B,), for the variance of importance weights.

        p(x|z)² = (4πσ²)^(−D/2) N(x; Az, σ²/2 I), so the moment is
        (4πσ²)^(−D/2) N(x; 0, v A Aᵀ + σ²/2 I); Var(p̂)/p² = (moment/p² − 1)/S.
        """
        return self._log_marginal(0.5 * self.sigma**2) - 0.5 * self.D * math.log(
            4 * math.pi * self.sigma**2
        )

    def _residual_moments(self, t: float | None, mean: np.ndarray | None, cov: np.ndarray | None):
        if mean is None or cov is None:
            m_t, c_t = self.posterior(t)
            mean = m_t if mean is None else mean
            cov = c_t if cov is None else cov
        mu_r = self._x - np.atleast_2d(mean) @ self._A.T  # (B, D)
        S = self._A @ cov @ self._A.T  # (D, D)
        return mu_r, S

    def expected_log_lik(
        self, t: float | None = 1.0, mean: np.ndarray | None = None, cov: np.ndarray | None = None
    ) -> np.ndarray:
        """E[log p(x_b | z)] for z ~ N(mean_b, cov) (default: the power posterior p_t), (B,).

        = −(|x_b − A m_b|² + tr(A C Aᵀ)) / (2σ²) − (D/2) log(2πσ²).
        """
        mu_r, S = self._residual_moments(t, mean, cov)
        s2 = self.sigma**2
        return -0.5 * ((mu_r**2).sum(axis=1) + np.trace(S)) / s2 - 0.5 * self.D * math.log(
            2 * math.pi * s2
        )

    def var_log_lik(
        self, t: float | None = 1.0, mean: np.ndarray | None = None, cov: np.ndarray | None = None
    ) -> np.ndarray:
        """Var[log p(x_b | z)] for z ~ N(mean_b, cov) (default p_t), (B,).

        With r = x_b − Az ~ N(μ_r, S): Var|r|² = 2 tr(S²) + 4 μ_rᵀ S μ_r, divided by 4σ⁴.
        It is also d/dt E_{p_t}[log p(x|z)] (the TI integrand's slope).
        """
        mu_r, S = self._residual_moments(t, mean, cov)
        var_q = 2 * np.trace(S @ S) + 4 * np.einsum("bi,ij,bj->b", mu_r, S, mu_r)
        return var_q / (4 * self.sigma**4)

    def ula_moments(
        self,
        t: float,
        eta: float,
        n_steps: int,
        mean0: np.ndarray | None = None,
        cov0: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact law of ULA after n steps from z_0 ~ N(mean0_b, cov0) (default: the prior).

        ULA on log p_t is the linear recursion e' = M e + √(2η) ξ, e = z − μ_t, M = I − ηΛ_t:
            mean_n = μ_t + Mⁿ (mean0 − μ_t),   cov_{k+1} = M cov_k Mᵀ + 2η I.
        Its fixed point is Λ_t⁻¹ (I − ηΛ_t/2)⁻¹ (the O(η)-biased ULA stationary covariance).
        Returns mean (B, d) and cov (d, d).
        """
        mu, _ = self.posterior(t)
        M = np.eye(self.d) - eta * self.precision(t)
        mean = np.zeros((self.B, self.d)) if mean0 is None else np.broadcast_to(mean0, mu.shape)
        cov = self.prior_var * np.eye(self.d) if cov0 is None else np.asarray(cov0, float)
        Mn = np.linalg.matrix_power(M, n_steps)
        for _ in range(n_steps):
            cov = M @ cov @ M.T + 2 * eta * np.eye(self.d)
        return mu + (mean - mu) @ Mn.T, cov

    def ula_stationary_cov(self, t: float, eta: float) -> np.ndarray:
        """Λ_t⁻¹ (I − ηΛ_t/2)⁻¹: ULA's stationary covariance (needs η < 2/λ_max(Λ_t))."""
        lam = self.precision(t)
        return np.linalg.inv(lam - 0.5 * eta * lam @ lam)

    # ------------------------------------------------------------- exact sampling

    def sample_posterior(self, t: Any, n_per_datum: int, rng: Any) -> Array:
        """Exact draws from p_t for every datum, on the device of x.

        Args:
            t: scalar, or a sequence of K temperatures.
            n_per_datum: R chains per datum and temperature.
            rng: ``Generator`` of the device's array module.

        Returns:
            z of shape (K·R·B, *latent_shape) (K = 1 for scalar t), chain index
            i = (k·R + r)·B + b, so chain i targets datum i % B at temperature t_k.
        """
        ts = [float(t)] if np.ndim(t) == 0 else [float(v) for v in t]
        draws = []
        for tk in ts:
            mean, cov = self.posterior(tk)
            L = np.linalg.cholesky(cov)
            eps = rng.standard_normal((n_per_datum, self.B, self.d), dtype=self.x.dtype)
            m = self.xp.asarray(mean, dtype=self.x.dtype)
            draws.append(m + eps @ self.xp.asarray(L.T, dtype=self.x.dtype))
        z = self.xp.stack(draws)  # (K, R, B, d)
        return z.reshape((-1,) + self.latent_shape)
