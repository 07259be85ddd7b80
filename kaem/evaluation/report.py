"""What is reported next to every held-out log-likelihood estimate (method §6): the error of
the prior's normaliser, the flag raised when it is as large as the estimate's own
uncertainty, the estimate's fields in ``log.csv`` and its one-line summary.

The normaliser's error. The univariate and mixture priors are normalised by quadrature, and
log p(x) contains −Σ_{q,p} log Z_{q,p}: an error δ_{q,p} in each log Z moves every image's
log-likelihood by up to Σ_{q,p} |δ_{q,p}| (exactly −Σ δ for the univariate prior; at most
Σ_q max_p |δ_{q,p}| for the mixture, whose components enter through a weighted sum, so the
same per-function sum bounds it). δ is measured as log Z with the configured rule minus
log Z with every cell split in two (Gauss–Legendre: twice the nodes):

    logZ_quad_err_sum = Σ_{q,p} |log Z_{q,p} − log Z_{q,p}^(refined)|      (nats)

The deep prior has no quadrature; its log Ẑ is itself estimated, and the standard error of
log Ẑ takes the sum's place. ``logZ_err_flag`` is true unless that error is at most the
estimate's standard error over images (``loglik_se``; for AIS on the deep prior the images'
part, ``loglik_se_images``, since ``loglik_se`` already contains log Ẑ's): a flagged
figure can be off by more than its quoted uncertainty, and a comparison resting on it is
not evidence until the quadrature is refined (``EbmModel.GaussQuad_nodes``, or a finer
grid for the trapezium rule). With no standard error (one image) the flag is raised.
"""
from __future__ import annotations

import math
from typing import Any

ESTIMATOR_NAMES = {"is": "importance sampling", "ais": "annealed importance sampling"}


def err_exceeds(err: float, se: float) -> bool:
    """The flag: True unless err <= se (so also when either is NaN)."""
    return not (err <= se)


def normaliser_check(prior: Any, res: dict[str, Any]) -> dict[str, Any]:
    """The normaliser's error for the estimate ``res`` (a result dict holding ``loglik_se``,
    and for the deep prior ``logZ_se`` or ``logZ_is_se``) of a model with ``prior``:
    ``logZ_quad_err`` (max over functions) and ``logZ_quad_err_sum`` for a quadrature prior,
    and ``logZ_err_flag`` (module docstring)."""
    if prior.has_exact_logZ:
        out: dict[str, Any] = {"logZ_quad_err": prior.quadrature_error(),
                               "logZ_quad_err_sum": prior.quadrature_error_sum()}
        err = out["logZ_quad_err_sum"]
    else:
        out, err = {}, res.get("logZ_se", res.get("logZ_is_se", math.nan))
    out["logZ_err_flag"] = err_exceeds(err, res.get("loglik_se_images", res["loglik_se"]))
    return out


def settings_text(res: dict[str, Any]) -> str:
    """The estimator and its settings, e.g. "IS, S = 1000" or "AIS, K = 1000, C = 16"."""
    if res.get("estimator") == "ais":
        return f"AIS, K = {res['temps']}, C = {res['chains']}"
    return f"IS, S = {res['S']}"


def normaliser_text(res: dict[str, Any]) -> str:
    """The normaliser's error as a short phrase, with a warning when flagged."""
    if "logZ_quad_err_sum" in res:
        text = f"Σ|Δ log Z| {res['logZ_quad_err_sum']:.2e}"
    elif "logZ_se" in res or "logZ_is_se" in res:
        text = f"log Ẑ se {res.get('logZ_se', res.get('logZ_is_se')):.3g}"
    else:
        return ""
    return text + (" > se: WARNING, the prior's normaliser is off by more than the standard error"
                   if res.get("logZ_err_flag") else "")


def estimate_text(res: dict[str, Any]) -> str:
    """One line: mean ± standard error, the estimator with its settings and the ESS, e.g.
    "-812.34 ± 3.21 nats/image (IS, S = 1000, ESS 1.4 per image)"."""
    return (f"{res['loglik_nats']:.2f} ± {res['loglik_se']:.2f} nats/image ({settings_text(res)}, "
            f"ESS {res['ess']:.3g} per image)")


def log_columns(res: dict[str, Any]) -> dict[str, Any]:
    """The estimate's ``log.csv`` fields: ``estimator``, ``eval_samples`` (IS: S),
    ``heldout_loglik_se``, ``heldout_ess``, ``logZ_quad_err_sum`` (quadrature priors) and
    ``logZ_err_flag`` (1 or 0)."""
    out = {"estimator": res.get("estimator", "is"), "eval_samples": res.get("S", ""),
           "heldout_loglik_se": res["loglik_se"], "heldout_ess": res["ess"],
           "logZ_err_flag": int(bool(res["logZ_err_flag"]))}
    if "logZ_quad_err_sum" in res:
        out["logZ_quad_err_sum"] = res["logZ_quad_err_sum"]
    return out
