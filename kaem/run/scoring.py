"""``eval``: the held-out log-likelihood and test MSE of a checkpoint, on its own test set.

The estimate of log p(x) is one of ``ESTIMATORS`` (today importance sampling from the prior,
``kaem/evaluation/heldout.py``; the name selects it, so another estimator is one more entry).
The test images default to the checkpoint's own: its data folder and test count
(``kaem/run/data.py``), then TRAINING.N_test; the number of prior samples S to
TRAINING.eval_importance_samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from kaem.run.data import DataSource, load_splits, stored_data_dir, stored_n_test
from kaem.run.failures import CommandError
from kaem.run.sampling import load_model


def _importance_sampling(model: Any, x: Any, S: int, rng: Any) -> dict[str, Any]:
    from kaem.evaluation.heldout import evaluate

    return evaluate(model, x, S, rng)


# name -> estimator(model, x (N, D) on the model's device, S, rng) -> the result dict of
# kaem.evaluation.heldout.evaluate (loglik_nats, bits_per_dim, test_mse, sigma, S, ...)
ESTIMATORS: dict[str, Callable[[Any, Any, int, Any], dict[str, Any]]] = {"is": _importance_sampling}


@dataclass
class Evaluation:
    """What ``evaluate_checkpoint`` measured: ``result`` (the estimator's numbers plus
    n_test and iteration; printed as JSON by ``eval --json``), the sample count S and
    whether the prior has an exact log Z by quadrature (else it is the deep prior)."""

    result: dict[str, Any]
    samples: int
    exact_logZ: bool


def evaluate_checkpoint(ckpt_path: str, n_test: int | None = None, samples: int | None = None, seed: int = 0,
                        device: str = "cpu", data_dir: str | None = None, download: bool = True,
                        offline_hint: str = "", estimator: str = "is") -> Evaluation:
    """Estimate the held-out log-likelihood (nats per image and bits per dimension) and the
    test MSE of the checkpoint at ``ckpt_path`` on the first ``n_test`` test images of its
    dataset with S = ``samples`` prior samples (defaults: module doc). A model giving
    non-finite numbers has diverged: a CommandError."""
    if estimator not in ESTIMATORS:
        raise CommandError(f"unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    ckpt, be, model = load_model(ckpt_path, device, with_data=True)
    meta, t = ckpt["meta"], model.cfg["TRAINING"]
    if not meta["dataset"]:
        raise CommandError(f"{ckpt_path} names no dataset (saved from the Python API), so there is no test set to "
                           "evaluate on; use kaem.evaluation.heldout.evaluate with your data")
    source = DataSource(stored_data_dir(meta, data_dir), download, offline_hint)
    _, x_test = load_splits(meta["dataset"], source, None, stored_n_test(meta, n_test, model.cfg),
                            (meta.get("data") or {}).get("resize"))
    S = samples or t["eval_importance_samples"]
    res = ESTIMATORS[estimator](model, be.asarray(x_test.reshape(x_test.shape[0], -1)), S, be.rng(seed))
    res.update(n_test=int(x_test.shape[0]), iteration=int(meta["iteration"]))
    bad = [k for k in ("loglik_nats", "test_mse") if not np.isfinite(res[k])]
    if bad:
        raise CommandError(f"the model in {ckpt_path} gives a non-finite {' and '.join(bad)} "
                           f"({', '.join(f'{k} = {res[k]}' for k in bad)}): it has diverged")
    return Evaluation(res, S, model.prior.has_exact_logZ)


def evaluation_lines(ckpt_path: str, ev: Evaluation) -> list[str]:
    """The evaluation as the lines ``eval`` prints: the checkpoint, log-likelihood, test MSE,
    and the check of the prior's normaliser (quadrature error, or the deep prior's log Z by
    importance sampling from π0 with its standard error and effective sample size)."""
    res = ev.result
    lines = [f"checkpoint {ckpt_path} (iteration {res['iteration']}), {res['n_test']} test images",
             f"held-out log-likelihood: {res['loglik_nats']:.3f} nats/image, {res['bits_per_dim']:.5f} bits/dim "
             f"(S = {ev.samples} prior samples, σ = {res['sigma']})",
             f"test MSE (generated vs test images): {res['test_mse']:.5f}"]
    if ev.exact_logZ:
        lines.append(f"prior quadrature check: max |Δ log Z| when the Gauss–Legendre nodes double = "
                     f"{res['logZ_quad_err']:.2e}"
                     + ("  (large: raise EbmModel.GaussQuad_nodes)" if res["logZ_quad_err"] > 1e-3 else ""))
    else:  # the deep prior: the line above used prior-Langevin draws
        lines.append(f"deep prior, importance sampling from π0: held-out log-likelihood "
                     f"{res['loglik_is_pi0_nats']:.3f} nats/image with log Z = {res['logZ_is']:.4f} ± "
                     f"{res['logZ_is_se']:.4f} (standard error; ESS {res['logZ_is_ess']:.0f} of {res['logZ_is_n']} "
                     "draws; unreliable when the ESS is small)")
    return lines
