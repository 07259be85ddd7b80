"""``eval``: the held-out log-likelihood and test MSE of a checkpoint, on its own test set.

The estimate of log p(x) is one of ``ESTIMATORS`` (method §6):

* ``ais``, annealed importance sampling (``kaem/evaluation/ais.py``), the default: K
  temperatures from the prior to each image's posterior, C chains per image; its error
  shrinks as K grows, and ``--bdmc N`` bounds it from both sides on N images simulated from
  the model (``kaem/evaluation/bdmc.py``). The deep prior's log Z comes from AIS too.
* ``is``, importance sampling from the prior with S samples (``kaem/evaluation/heldout.py``),
  what training logs every epoch: cheap, but a lower bound whose looseness depends on S.

Given ``--samples`` and no estimator, ``is`` is meant; AIS's ``--temps``/``--chains`` and IS's
``--samples`` are refused with the other estimator, so a setting is never silently unused.
Next to every estimate: its standard error over images, the effective sample size, and the
error of the prior's normaliser with its flag (``kaem/evaluation/report.py``). The test
images default to the checkpoint's own: its data folder and test count
(``kaem/run/data.py``), then TRAINING.N_test; S to TRAINING.eval_importance_samples, K and C
to AIS's defaults.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kaem.evaluation.report import ESTIMATOR_NAMES, normaliser_check
from kaem.run.arguments import int_in, positive_int
from kaem.run.data import DataSource, load_splits, stored_data_dir, stored_n_test
from kaem.run.failures import CommandError
from kaem.run.sampling import load_model

MAX_TEMPS = 100_000  # AIS K: cost ∝ K·C per image
MAX_CHAINS = 4096  # AIS C: the chains of one image are alive at once
MAX_BDMC = 10_000  # simulated images of --bdmc, each costing two AIS runs
EVAL_DESCRIPTION = (
    "Estimate the held-out log-likelihood log p(x) (nats per image, ± its standard error over images, and "
    "bits per dimension) and the test MSE of a checkpoint on its test images. Estimators: ais (default) "
    "anneals from the prior to each image's posterior through K temperatures with C chains; it converges to "
    "log p(x) as K grows, and --bdmc N measures how far off it is on N images simulated from the model, so it "
    "is the number to compare models by; it costs K·C generator passes per image (about 9 ms per image and "
    "temperature for the default Fashion-MNIST model on two CPU cores, 0.3 ms on a GPU). is samples the prior "
    "S times: seconds, and what training logs each epoch, but a lower bound whose looseness depends on S and "
    "on how far the posteriors sit from the prior. Next to the estimate: the chains' or samples' effective "
    "sample size and the prior's normaliser error (summed quadrature error, or the deep prior's log Z "
    "standard error), flagged when it exceeds the standard error.")
Say = Callable[[str], None]


def eval_arguments(e: argparse.ArgumentParser) -> None:
    """The ``eval`` options that choose and tune the estimator (and --n-test, --json)."""
    from kaem.config import MAX_EVAL_SAMPLES
    from kaem.evaluation.ais import DEFAULT_CHAINS, DEFAULT_TEMPS

    e.add_argument("--estimator", choices=tuple(ESTIMATORS),
                   help="ais (annealed importance sampling: the trustworthy figure, minutes on a GPU and hours on a "
                        "CPU for 1 000 images) or is (importance sampling from the prior: seconds, a lower bound "
                        "that loosens as S falls) (default: ais, or is when --samples is given)")
    e.add_argument("--samples", type=int_in(1, MAX_EVAL_SAMPLES), metavar="S",
                   help=f"is: prior samples S, at most {MAX_EVAL_SAMPLES} (default: TRAINING.eval_importance_samples)")
    e.add_argument("--temps", type=int_in(1, MAX_TEMPS), metavar="K",
                   help=f"ais: annealing temperatures K, at most {MAX_TEMPS} (default: {DEFAULT_TEMPS})")
    e.add_argument("--chains", type=int_in(1, MAX_CHAINS), metavar="C",
                   help=f"ais: chains per image C, at most {MAX_CHAINS} (default: {DEFAULT_CHAINS})")
    e.add_argument("--bdmc", type=int_in(1, MAX_BDMC), metavar="N",
                   help="ais: also bidirectional Monte Carlo on N images simulated from the model, with the same K "
                        "and C: a lower and an upper bound of their log p(x) whose gap bounds AIS's error "
                        f"(univariate and mixture priors; at most {MAX_BDMC})")
    e.add_argument("--n-test", type=positive_int, help="test images (default: the checkpoint's, else TRAINING.N_test)")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    e.add_argument("--per-image", action="store_true",
                   help="with --json: also each image's estimate and ESS (loglik_per_image, ess_per_image), to "
                        "compare two checkpoints image by image on the same test images (a paired difference "
                        "has a far smaller standard error than the two means)")


def eval_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed estimator options as keywords of ``evaluate_checkpoint`` (after checking
    that ``--per-image`` comes with ``--json``)."""
    if getattr(args, "per_image", False) and not args.json:
        raise CommandError("--per-image needs --json (the per-image lists are part of the JSON object)")
    return {k: getattr(args, k) for k in ("estimator", "samples", "temps", "chains", "bdmc")}


@dataclass(frozen=True)
class EvalSettings:
    """The estimator and its settings (None: the default)."""

    estimator: str
    samples: int | None = None  # IS: S
    temps: int | None = None  # AIS: K
    chains: int | None = None  # AIS: C
    bdmc: int = 0  # AIS: simulated images of BDMC (0: none)


def _check_count(name: str, value: Any, hi: int, lo: int = 1) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or not lo <= value <= hi):
        raise CommandError(f"{name} {value!r}: expected an integer from {lo} to {hi}")


def eval_settings(estimator: str | None = None, samples: int | None = None, temps: int | None = None,
                  chains: int | None = None, bdmc: int | None = None) -> EvalSettings:
    """Check and resolve the estimator options: the estimator defaults to ``ais``, or ``is``
    when ``samples`` is given; a setting of the other estimator, or a count out of range, is
    a CommandError naming it and its valid values."""
    from kaem.config import MAX_EVAL_SAMPLES

    if estimator is None:
        estimator = "is" if samples is not None else "ais"
    if estimator not in ESTIMATORS:
        raise CommandError(f"unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    for name, value, hi in (("--samples", samples, MAX_EVAL_SAMPLES), ("--temps", temps, MAX_TEMPS),
                            ("--chains", chains, MAX_CHAINS), ("--bdmc", bdmc, MAX_BDMC)):
        _check_count(name, value, hi)
    if estimator == "ais" and samples is not None:
        raise CommandError(f"--samples {samples}: a setting of --estimator is (prior samples S); valid with "
                           "--estimator ais: --temps, --chains, --bdmc")
    wrong = [f"{n} {v}" for n, v in (("--temps", temps), ("--chains", chains), ("--bdmc", bdmc)) if v]
    if estimator == "is" and wrong:
        raise CommandError(f"{', '.join(wrong)}: {'a setting' if len(wrong) == 1 else 'settings'} of --estimator ais; "
                           "valid with --estimator is: --samples")
    return EvalSettings(estimator, samples, temps, chains, bdmc or 0)


def _importance_sampling(model: Any, x: Any, s: EvalSettings, rng: Any) -> dict[str, Any]:
    from kaem.evaluation.heldout import evaluate

    return evaluate(model, x, s.samples or model.cfg["TRAINING"]["eval_importance_samples"], rng)


def _annealed(model: Any, x: Any, s: EvalSettings, rng: Any) -> dict[str, Any]:
    from kaem.evaluation.ais import DEFAULT_CHAINS, DEFAULT_TEMPS, ais_loglik
    from kaem.evaluation.heldout import generated_mse

    res = ais_loglik(model, x, rng=rng, temps=s.temps or DEFAULT_TEMPS, chains=s.chains or DEFAULT_CHAINS)
    res.update(normaliser_check(model.prior, res), test_mse=float(generated_mse(model, x, rng)),
               sigma=model.lik.sigma)
    if s.bdmc:
        from kaem.evaluation.bdmc import bdmc

        b = bdmc(model, s.bdmc, rng=rng, temps=res["temps"], chains=res["chains"], refresh=res["refresh"],
                 resample_ess=res["resample_ess"])
        res.update({k: v for k, v in b.items() if k.startswith("bdmc_")})
    return res


# name -> estimator(model, x (N, D) on the model's device, settings, rng) -> host values:
# loglik_nats, loglik_se, ess, bits_per_dim, test_mse, sigma, estimator, its settings, the
# normaliser check (report.normaliser_check), and per-image lists (keys ending in _per_image)
ESTIMATORS: dict[str, Callable[[Any, Any, EvalSettings, Any], dict[str, Any]]] = {
    "ais": _annealed, "is": _importance_sampling}


@dataclass
class Evaluation:
    """What ``evaluate_checkpoint`` measured: ``result`` (the estimator's numbers plus
    n_test and iteration; printed as JSON by ``eval --json``), the settings, the prior's
    kind, its quadrature rule and function count (for the report), and the per-image lists
    (``loglik_per_image``, ...; left out of ``result``)."""

    result: dict[str, Any]
    settings: EvalSettings
    prior_kind: str
    rule: str = ""
    functions: int = 0
    per_image: dict[str, list] = field(default_factory=dict)


def evaluate_checkpoint(ckpt_path: str, n_test: int | None = None, samples: int | None = None, seed: int = 0,
                        device: str = "cpu", data_dir: str | None = None, download: bool = True,
                        offline_hint: str = "", estimator: str | None = None, temps: int | None = None,
                        chains: int | None = None, bdmc: int | None = None, say: Say | None = None) -> Evaluation:
    """Estimate the held-out log-likelihood (nats per image, its standard error, bits per
    dimension) and the test MSE of the checkpoint at ``ckpt_path`` on the first ``n_test``
    test images of its dataset, by ``estimator`` with its settings (``eval_settings``;
    defaults: module doc); ``bdmc`` N: also BDMC on N simulated images. ``say``: told what
    is about to run (AIS can take long). A model giving non-finite numbers has diverged: a
    CommandError."""
    s = eval_settings(estimator, samples, temps, chains, bdmc)
    ckpt, be, model = load_model(ckpt_path, device, with_data=True)
    meta, kind = ckpt["meta"], model.prior.kind
    if not meta["dataset"]:
        raise CommandError(f"{ckpt_path} names no dataset (saved from the Python API), so there is no test set to "
                           "evaluate on; use kaem.evaluation.heldout.evaluate or kaem.evaluation.ais.ais_loglik "
                           "with your data")
    if s.bdmc and kind not in ("univariate", "mixture"):
        raise CommandError(f"--bdmc needs exact draws from the prior, which the {kind} prior of {ckpt_path} lacks; "
                           "valid for the univariate and mixture priors")
    source = DataSource(stored_data_dir(meta, data_dir), download, offline_hint)
    _, x_test = load_splits(meta["dataset"], source, None, stored_n_test(meta, n_test, model.cfg),
                            (meta.get("data") or {}).get("resize"))
    if say is not None and s.estimator == "ais":
        say(f"eval: AIS on {x_test.shape[0]} test images{f' and BDMC on {s.bdmc} simulated ones' if s.bdmc else ''}"
            " (cost ∝ images·K·C; --estimator is gives a quick lower bound)")
    res = ESTIMATORS[s.estimator](model, be.asarray(x_test.reshape(x_test.shape[0], -1)), s, be.rng(seed))
    per_image = {k: res.pop(k) for k in [k for k in res if k.endswith("_per_image")]}
    res.update(n_test=int(x_test.shape[0]), iteration=int(meta["iteration"]))
    bad = [k for k in ("loglik_nats", "test_mse") if not np.isfinite(res[k])]
    if bad:
        raise CommandError(f"the model in {ckpt_path} gives a non-finite {' and '.join(bad)} "
                           f"({', '.join(f'{k} = {res[k]}' for k in bad)}): it has diverged")
    rule = getattr(getattr(model.prior, "rule", None), "name", "")
    functions = model.prior.layer.out_dim * model.prior.layer.in_dim if model.prior.has_exact_logZ else 0
    return Evaluation(res, s, kind, rule, functions, per_image)


def json_text(ev: Evaluation, per_image: bool = False) -> str:
    """``result`` (and, with ``per_image``, the per-image lists) as one JSON object; a
    non-finite number (a standard error of one image) is null."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({k: clean(v) for k, v in {**ev.result, **(ev.per_image if per_image else {})}.items()})


def _normaliser_lines(ev: Evaluation) -> list[str]:
    """The prior's normaliser: the summed quadrature error (or the deep prior's log Z), and
    a warning when it exceeds the estimate's standard error."""
    res = ev.result
    if "logZ_quad_err_sum" in res:
        how = "the Gauss–Legendre nodes double" if ev.rule == "gausslegendre" else "every cell is split in two"
        lines = [f"prior normaliser: Σ_(q,p) |Δ log Z| = {res['logZ_quad_err_sum']:.2e} nats over the {ev.functions} "
                 f"functions when {how} (max {res['logZ_quad_err']:.2e})"]
        if res["logZ_err_flag"]:
            lines.append(f"warning: the summed quadrature error {res['logZ_quad_err_sum']:.3g} nats exceeds the "
                         f"standard error {res['loglik_se']:.3g}: the figure can be off by more than its uncertainty; "
                         "use more nodes (EbmModel.GaussQuad_nodes, or EbmModel.quadrature_method = gausslegendre)")
        return lines
    if res.get("estimator") == "ais":  # the deep prior's log Z by AIS from π0, inside loglik_se
        lines = [f"deep prior: log Z = {res['logZ']:.4f} ± {res['logZ_se']:.4f} by AIS from π0 ({res['logZ_chains']} "
                 f"chains, ESS {res['logZ_ess']:.0f}), subtracted from every image; its standard error is part of "
                 f"the ± above (images alone: {res['loglik_se_images']:.3f})"]
    else:  # the IS figure above used prior-Langevin draws
        lines = [f"deep prior, importance sampling from π0: held-out log-likelihood {res['loglik_is_pi0_nats']:.3f} "
                 f"nats/image with log Z = {res['logZ_is']:.4f} ± {res['logZ_is_se']:.4f} (standard error; ESS "
                 f"{res['logZ_is_ess']:.0f} of {res['logZ_is_n']} draws; unreliable when the ESS is small)"]
    if res["logZ_err_flag"]:
        lines.append("warning: the standard error of log Z exceeds the images' standard error: the figure is "
                     "uncertain mostly through the prior's normaliser")
    return lines


def evaluation_lines(ckpt_path: str, ev: Evaluation) -> list[str]:
    """The evaluation as the lines ``eval`` prints: the checkpoint; the log-likelihood ± its
    standard error; the estimator, its settings and ESS; the test MSE; the prior's normaliser
    (``_normaliser_lines``); BDMC's bounds if asked for."""
    res = ev.result
    lines = [f"checkpoint {ckpt_path} (iteration {res['iteration']}), {res['n_test']} test images",
             f"held-out log-likelihood: {res['loglik_nats']:.3f} ± {res['loglik_se']:.3f} nats/image (standard error "
             f"over images), {res['bits_per_dim']:.5f} bits/dim (σ = {res['sigma']})"]
    name = ESTIMATOR_NAMES[ev.settings.estimator]
    if ev.settings.estimator == "ais":
        lines.append(f"estimator: {name}, K = {res['temps']} temperatures ({res['schedule']} schedule), C = "
                     f"{res['chains']} chains per image, L = {res['n_leapfrog']} leapfrog steps, {res['refresh']} refresh "
                     f"moves, resampling at ESS < {res['resample_ess']:g}·C; Monte Carlo standard error "
                     f"{res['loglik_mc_se']:.3g}; ESS {res['ess']:.3g} per image since the last resampling (min "
                     f"{res['ess_min']:.3g} of {res['chains']}); acceptance {res['acceptance']:.2f}")
    else:
        lines.append(f"estimator: {name} from the prior, S = {res['S']} samples; Monte Carlo standard error "
                     f"{res['loglik_mc_se']:.3g}; ESS {res['ess']:.3g} per image (min {res['ess_min']:.3g} of "
                     f"{res['S']}): a lower bound, looser the smaller S (--estimator ais for the figure to compare)")
    lines.append(f"test MSE (generated vs test images): {res['test_mse']:.5f}")
    lines += _normaliser_lines(ev)
    if "bdmc_gap_nats" in res:
        lines.append(f"BDMC on {res['bdmc_n']} images simulated from the model (same K and C), nats/image: lower "
                     f"{res['bdmc_lower_nats']:.3f} ± {res['bdmc_lower_se']:.3f}, upper "
                     f"{res['bdmc_upper_nats']:.3f} ± {res['bdmc_upper_se']:.3f}, gap {res['bdmc_gap_nats']:.3f} ± {res['bdmc_gap_se']:.3f} "
                     "(bounds AIS's error on such data)")
    return lines
