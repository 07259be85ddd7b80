"""The reference's MNIST/FMNIST sweep: π0 ∈ {uniform, gaussian, lognormal, ebm} × basis ∈
{RBF (G=20), FFT (G=50)}, one run each into its own folder.

This module holds only the plan. ``cli.py sweep`` turns it into a job file of ordinary
``train`` lines (OUT/sweep.txt) and runs that with the job-file machinery of
``kaem/jobs.py`` (skipping finished runs, continuing interrupted ones, one summary table).
"""
from __future__ import annotations

from typing import Any

PI0S = ("uniform", "gaussian", "lognormal", "ebm")
SWEPT_BASES = {"RBF": "", "FFT": "-fft"}  # basis -> preset suffix


def sweep_plan(dataset: str) -> list[dict[str, Any]]:
    """One entry per run: name (also its folder), π0, basis, preset and the --set overrides."""
    return [{"run": f"{pi0}-{basis}", "π_0": pi0, "basis": basis, "preset": dataset + suffix,
             "overrides": [f"EbmModel.π_0={pi0}"]}
            for basis, suffix in SWEPT_BASES.items() for pi0 in PI0S]
