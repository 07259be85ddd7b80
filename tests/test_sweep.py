"""The π0 × basis sweep: eight runs into their own folders and one summary table."""
from __future__ import annotations

import csv
import os

import numpy as np

import cli
from kaem.sweep import PI0S, SWEPT_BASES, summary_markdown, sweep_plan

TINY = ["--set", "EbmModel.layer_widths=3,7", "--set", "GeneratorModel.widths=7,12",
        "--set", "EbmModel.grid_size=4", "--set", "GeneratorModel.grid_size=4",
        "--set", "TRAINING.importance_sample_size=10", "--set", "TRAINING.eval_importance_samples=20"]


def test_plan_covers_the_reference_grid():
    plan = sweep_plan("fmnist")
    assert {(p["π_0"], p["basis"]) for p in plan} == {(a, b) for a in PI0S for b in SWEPT_BASES}
    assert {p["preset"] for p in plan} == {"fmnist", "fmnist-fft"}
    assert len({p["run"] for p in plan}) == 8


def test_sweep_runs_all_and_writes_summary(tmp_path, data_dir, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--dataset", "fmnist", "--out", str(out), "--data-dir", data_dir, "--no-download",
            "--n-train", "100", "--n-test", "20", "--batch-size", "50", "--epochs", "1", *TINY]
    assert cli.main(args) == 0
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("heldout_loglik_nats", "test_mse", "wall_time_s"))
    for r in rows:  # each run in its own folder, with the right basis and π0 in its checkpoint
        from kaem.checkpoint import load_checkpoint
        from kaem.config import config_from_ini

        cfg = config_from_ini(load_checkpoint(str(out / r["run"] / "ckpt.npz"))["config"])
        assert cfg["EbmModel"]["π_0"] == r["π_0"] and cfg["GeneratorModel"]["spline_function"] == r["basis"]
    md = (out / "summary.md").read_text()
    assert md.count("\n") == 10 and "lognormal-FFT" in md
    # a second call resumes finished runs without training them again
    mtimes = {r["run"]: os.path.getmtime(out / r["run"] / "log.csv") for r in rows}
    assert cli.main(args) == 0
    assert all(os.path.getmtime(out / k / "log.csv") == v for k, v in mtimes.items())


def test_sweep_only_rejects_unknown_runs(tmp_path, capsys):
    assert cli.main(["sweep", "--out", str(tmp_path), "--only", "ebm-RBF", "cauchy-RBF"]) == 2
    err = capsys.readouterr().err
    assert "cauchy-RBF" in err and "gaussian-FFT" in err


def test_summary_markdown_marks_failures():
    md = summary_markdown([{"run": "ebm-RBF", "status": "failed", "note": "TrainingError: a|b"}])
    assert "failed" in md and "a/b" in md
