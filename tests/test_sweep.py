"""The π0 × basis sweep: eight runs into their own folders, run as a job file, one summary table."""
from __future__ import annotations

import csv
import os
import shlex

import numpy as np

import cli
from kaem.run.jobs import summary_markdown
from kaem.run.sweep import PI0S, SWEPT_BASES, sweep_plan

TINY = ["--set", "EbmModel.layer_widths=3,7", "--set", "GeneratorModel.widths=7,12",
        "--set", "EbmModel.grid_size=4", "--set", "GeneratorModel.grid_size=4",
        "--set", "TRAINING.importance_sample_size=10", "--set", "TRAINING.eval_importance_samples=20"]


def test_plan_covers_the_reference_grid():
    plan = sweep_plan("fmnist")
    assert {(p["π_0"], p["basis"]) for p in plan} == {(a, b) for a in PI0S for b in SWEPT_BASES}
    assert {p["preset"] for p in plan} == {"fmnist", "fmnist-fft"}
    assert len({p["run"] for p in plan}) == 8


def test_sweep_runs_all_and_writes_summary(tmp_path, data_dir, capsys):
    """The sweep is a generated job file run by the jobs machinery: eight train lines that
    carry the sweep's options, one summary, finished runs skipped on a rerun."""
    out = tmp_path / "sweep"
    args = ["sweep", "--dataset", "FMNIST", "--out", str(out), "--data-dir", data_dir, "--no-download",
            "--n-train", "100", "--n-test", "20", "--batch-size", "50", "--epochs", "1", *TINY]
    assert cli.main(args) == 0
    lines = [shlex.split(t) for t in (out / "sweep.txt").read_text().splitlines() if not t.startswith("#")]
    assert len(lines) == 8 and all(w[0] == "train" for w in lines)
    for w in lines:  # the sweep's own options, passed on to every run
        assert w[w.index("--n-train") + 1] == "100" and w[w.index("--epochs") + 1] == "1" and "--no-download" in w
        assert TINY[-1] in w and w[w.index("--dataset") + 1] == "fmnist"
    rows = list(csv.DictReader(open(out / "sweep.summary.csv")))
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("heldout_loglik_nats", "test_mse", "wall_time_s"))
    runs = {os.path.basename(r["output"]) for r in rows}
    assert runs == {p["run"] for p in sweep_plan("fmnist")}
    for r in rows:  # each run in its own folder, with the right basis and π0 in its checkpoint
        from kaem.run.checkpoint import load_checkpoint
        from kaem.config import config_from_ini

        pi0, basis = os.path.basename(r["output"]).split("-")
        cfg = config_from_ini(load_checkpoint(os.path.join(r["output"], "ckpt.npz"))["config"])
        assert cfg["EbmModel"]["π_0"] == pi0 and cfg["GeneratorModel"]["spline_function"] == basis
    md = (out / "sweep.summary.md").read_text()
    assert md.count("\n") == 10 and "lognormal-FFT" in md
    # a second call skips the finished runs without training them again
    mtimes = {r["output"]: os.path.getmtime(os.path.join(r["output"], "log.csv")) for r in rows}
    capsys.readouterr()
    assert cli.main(args) == 0
    assert all(os.path.getmtime(os.path.join(k, "log.csv")) == v for k, v in mtimes.items())
    assert "training KAEM" not in capsys.readouterr().err


def test_sweep_only_rejects_unknown_runs(tmp_path, capsys):
    assert cli.main(["sweep", "--out", str(tmp_path), "--only", "ebm-RBF", "cauchy-RBF"]) == 2
    err = capsys.readouterr().err
    assert "cauchy-RBF" in err and "gaussian-FFT" in err


def test_summary_markdown_marks_failures():
    md = summary_markdown([{"line": 3, "command": "train --out x", "status": "failed", "note": "TrainingError: a|b"}])
    assert "| 3 | `train --out x` | failed |" in md and "a/b" in md


def test_every_run_option_goes_into_the_train_lines():
    """The generated lines carry every option the sweep was given except its own, so a new
    run option (such as --resize) reaches the runs without the sweep knowing of it."""
    args = cli.build_parser().parse_args(["sweep", "--dataset", "FMNIST", "--out", "x", "--only", "ebm-RBF",
                                          "--epochs", "2", "--resize", "16", "--set", "A.b=1", "--set", "C.d=2",
                                          "--no-download", "--seed", "3"])
    words = cli._option_words(args, "sweep", cli.SWEEP_OWN)
    assert words == ["--set", "A.b=1", "--set", "C.d=2", "--epochs", "2", "--resize", "16", "--seed", "3",
                     "--no-download"]
    assert cli._check_job(["train", *words]) == ""  # and they make a valid train line
