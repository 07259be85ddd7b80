"""The reference's MNIST/FMNIST sweep: π0 ∈ {uniform, gaussian, lognormal, ebm} × basis ∈
{RBF (G=20), FFT (G=50)}, run one after the other, each into its own folder, summarised in
one table (CSV and Markdown) of final held-out log-likelihood, test MSE and wall time.

The runs themselves are ordinary ``train`` runs (``cli.py sweep`` drives them); this
module holds the plan and the summary, which read only each run's ``log.csv``.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any

from .atomic import atomic_open

PI0S = ("uniform", "gaussian", "lognormal", "ebm")
SWEPT_BASES = {"RBF": "", "FFT": "-fft"}  # basis -> preset suffix
SUMMARY_COLUMNS = ("run", "π_0", "basis", "status", "iteration", "heldout_loglik_nats",
                   "bits_per_dim", "test_mse", "wall_time_s", "note")


def sweep_plan(dataset: str) -> list[dict[str, Any]]:
    """One entry per run: name (also its folder), preset, and the --set overrides."""
    return [{"run": f"{pi0}-{basis}", "π_0": pi0, "basis": basis, "preset": dataset + suffix,
             "overrides": [f"EbmModel.π_0={pi0}"]}
            for basis, suffix in SWEPT_BASES.items() for pi0 in PI0S]


def final_row(run_dir: str) -> dict[str, str] | None:
    """The last row of a run's log.csv, or None if it has none."""
    path = os.path.join(run_dir, "log.csv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[-1] if rows else None


def summary_entry(plan: dict[str, Any], run_dir: str, status: str, note: str = "") -> dict[str, Any]:
    """A summary row for one run from its final log row (blank figures if it has none)."""
    row = final_row(run_dir) or {}
    return {"run": plan["run"], "π_0": plan["π_0"], "basis": plan["basis"], "status": status,
            "iteration": row.get("iteration", ""), "heldout_loglik_nats": row.get("heldout_loglik_nats", ""),
            "bits_per_dim": row.get("bits_per_dim", ""), "test_mse": row.get("test_mse", ""),
            "wall_time_s": row.get("time_s", ""), "note": note}


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def summary_markdown(entries: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(SUMMARY_COLUMNS) + " |\n|" + "---|" * len(SUMMARY_COLUMNS) + "\n"
    return head + "".join("| " + " | ".join(_fmt(e.get(c, "")).replace("|", "/") for c in SUMMARY_COLUMNS)
                          + " |\n" for e in entries)


def write_summary(out_dir: str, entries: list[dict[str, Any]]) -> tuple[str, str]:
    """Write OUT/summary.csv and OUT/summary.md (atomically); returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS)
    w.writeheader()
    w.writerows({c: e.get(c, "") for c in SUMMARY_COLUMNS} for e in entries)
    csv_path, md_path = os.path.join(out_dir, "summary.csv"), os.path.join(out_dir, "summary.md")
    for path, text in ((csv_path, buf.getvalue()), (md_path, summary_markdown(entries))):
        with atomic_open(path, "w") as fh:
            fh.write(text)
    return csv_path, md_path
