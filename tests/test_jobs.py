"""Job files (cli.py jobs, make train-sequential): two short trainings, a line that fails
at run time, one that cannot parse and an evaluation; the summary; a rerun that only
prints it; an interrupted run that resumes; the reference's make targets."""
from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

import cli
from kaem.run.checkpoint import load_checkpoint
from kaem.run.jobs import parse_jobs, reference_line
from kaem.run.logfile import read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--set EbmModel.layer_widths=3,7 --set GeneratorModel.widths=7,12 --set EbmModel.grid_size=4 "
        "--set GeneratorModel.grid_size=4 --set TRAINING.importance_sample_size=10 "
        "--set TRAINING.eval_importance_samples=20")


def _train_line(data_dir, out, *extra):
    # upper-case dataset name on purpose: names are case-insensitive, as in the reference
    return (f"train --dataset FMNIST --data-dir {data_dir} --no-download --n-train 100 --n-test 20 "
            f"--batch-size 50 --epochs 2 --log-every 1 --out {out} {TINY} {' '.join(extra)}")


def _rows(path):
    return {int(r["line"]): r for r in csv.DictReader(open(path))}


def _job_file(tmp, data_dir, a, b):
    text = f"""# two short trainings, a failing line, a line that is no command, an evaluation
{_train_line(data_dir, a)}

{_train_line(data_dir, b, "--set", "EbmModel.π_0=ebm")}   # π0 = ebm
{_train_line(data_dir, a, "--set", "EbmModel.grid_size=5")}
trian --dataset fmnist
eval --ckpt {a}/ckpt.npz --data-dir {data_dir} --no-download --n-test 20 --samples 30
"""
    path = tmp / "jobs.txt"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("jobs")
    path = _job_file(tmp, data_dir, tmp / "a", tmp / "b")
    status = cli.main(["jobs", str(path)])
    return tmp, path, status


def test_parse_comments_quotes_repeats_and_reference_lines():
    jobs = parse_jobs("# c\n\ntrain --out 'runs/a b'  # trailing\nFMNIST vanilla\nSVHN THERMO\n"
                      "eval --ckpt x.npz\neval --ckpt x.npz\nsample --out 'unclosed\n")
    assert [j.line for j in jobs] == [3, 4, 5, 6, 7, 8]
    assert jobs[0].argv == ["train", "--out", "runs/a b"] and jobs[0].text == "train --out 'runs/a b'"
    assert jobs[1].argv == ["train", "--dataset", "FMNIST", "--out", os.path.join("runs", "fmnist-vanilla")]
    assert jobs[2].argv == ["train", "--dataset", "SVHN", "--mode", "thermo", "--out", os.path.join("runs", "svhn-thermo")]
    assert jobs[3].key == "eval --ckpt x.npz" and jobs[4].key == "eval --ckpt x.npz #2"  # a repeat is its own job
    assert jobs[5].error.startswith("cannot split the line") and not jobs[0].error
    assert reference_line(["eval", "--ckpt"]) is None and reference_line(["MNIST", "fast"]) is None


def test_runs_to_the_end_with_the_right_summary(first_run):
    tmp, path, status = first_run
    assert status == 1  # two lines failed, the others ran
    rows = _rows(tmp / "jobs.summary.csv")
    assert {k: r["status"] for k, r in rows.items()} == {2: "ok", 4: "ok", 5: "failed", 6: "failed", 7: "ok"}
    for line, run in ((2, "a"), (4, "b")):  # a training's figures are its final log row
        final = read_log(str(tmp / run))[-1]
        assert rows[line]["output"] == str(tmp / run) and int(rows[line]["iteration"]) == 4 == final["iteration"]
        for k in ("heldout_loglik_nats", "bits_per_dim", "test_mse"):
            assert float(rows[line][k]) == pytest.approx(final[k], rel=1e-8)
        assert float(rows[line]["wall_time_s"]) > 0
    assert load_checkpoint(str(tmp / "b" / "ckpt.npz"))["meta"]["dataset"] == "fmnist"
    # line 5 reuses a's folder with another config: refused, naming the difference; a is untouched
    assert "EbmModel.grid_size: 4 stored, 5 asked" in rows[5]["note"]
    assert load_checkpoint(str(tmp / "a" / "ckpt.npz"))["meta"]["iteration"] == 4
    assert "invalid choice: 'trian'" in rows[6]["note"] and rows[6]["wall_time_s"] == ""  # never run
    ev = rows[7]  # the evaluation's own numbers, of a's final checkpoint
    assert int(ev["iteration"]) == 4 and np.isfinite(float(ev["heldout_loglik_nats"]))
    assert 0 < float(ev["test_mse"]) < 1
    md = (tmp / "jobs.summary.md").read_text().splitlines()
    assert len(md) == 2 + 5 and "| 5 | `train" in md[4] and "| failed |" in md[4] and "grid_size" in md[4]


def test_rerun_only_prints_the_summary(first_run, capsys):
    tmp, path, _ = first_run
    logs = {r: os.path.getmtime(tmp / r / "log.csv") for r in ("a", "b")}
    capsys.readouterr()
    assert cli.main(["jobs", str(path)]) == 1  # the recorded failures stand
    out, err = capsys.readouterr()
    assert "===" not in err and "training KAEM" not in err and "held-out" not in err  # nothing ran
    assert err.count("earlier, skipped") == 4
    assert out.startswith("| line | job |") and out.count("| ok |") == 3 and "jobs.summary.md" in out
    assert {r: os.path.getmtime(tmp / r / "log.csv") for r in ("a", "b")} == logs
    assert cli.main(["jobs", str(path), "--dry-run"]) == 2  # a line cannot run
    plan = capsys.readouterr().out.splitlines()
    assert plan[0].startswith("line 2: done, skip") and plan[2].startswith("line 5: failed before, skip")
    assert plan[3].startswith("line 6: cannot run")


def test_interrupted_run_resumes_where_it_stopped(first_run, data_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first epoch's checkpoint: the file stops there (status 130); rerun,
    the training continues at that iteration and ends equal to an uninterrupted one."""
    from kaem.run.trainer import Trainer

    tmp, _, _ = first_run
    path = tmp_path / "jobs.txt"
    path.write_text(f"{_train_line(data_dir, tmp_path / 'a')}\n"
                    f"eval --ckpt {tmp_path}/a/ckpt.npz --data-dir {data_dir} --no-download --n-test 20 --samples 30\n")
    save = Trainer.save

    def save_then_interrupt(self, p):
        save(self, p)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", save_then_interrupt)
    assert cli.main(["jobs", str(path)]) == 130
    rows = _rows(tmp_path / "jobs.summary.csv")
    assert (rows[1]["status"], rows[2]["status"]) == ("interrupted", "pending")
    assert load_checkpoint(str(tmp_path / "a" / "ckpt.npz"))["meta"]["iteration"] == 2
    monkeypatch.setattr(Trainer, "save", save)
    capsys.readouterr()
    assert cli.main(["jobs", str(path)]) == 0
    err = capsys.readouterr().err
    assert "at iteration 2" in err and "it 3/4" in err and "it 1/4" not in err
    rows = _rows(tmp_path / "jobs.summary.csv")
    assert (rows[1]["status"], rows[2]["status"]) == ("ok", "ok")
    assert [r["iteration"] for r in read_log(str(tmp_path / "a"))] == [0, 2, 4]  # no epoch logged twice
    resumed = load_checkpoint(str(tmp_path / "a" / "ckpt.npz"))["params"]
    straight = load_checkpoint(str(tmp / "a" / "ckpt.npz"))["params"]
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_make_train_vanilla_with_upper_case_dataset(data_dir, tmp_path):
    """`make train-vanilla DATASET=FMNIST` trains into RUNS/fmnist-vanilla; run again, it
    finds the run finished and leaves it as it is."""
    args = (f"--data-dir {data_dir} --no-download --n-train 100 --n-test 20 --batch-size 50 --epochs 1 {TINY}")
    cmd = ["make", "-s", "-C", ROOT, "train-vanilla", "DATASET=FMNIST", f"RUNS={tmp_path}",
           f"PYTHON={shlex.quote(sys.executable)}", f"ARGS={args}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    ckpt = tmp_path / "fmnist-vanilla" / "ckpt.npz"
    assert load_checkpoint(str(ckpt))["meta"]["dataset"] == "fmnist"
    mtime = os.path.getmtime(ckpt)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    # the run is found finished: said so, nothing trained or saved, the checkpoint untouched
    assert "fmnist-vanilla is finished (epoch 1 of 1); nothing to train" in again.stderr
    assert "training KAEM" not in again.stderr and "saved" not in again.stderr and os.path.getmtime(ckpt) == mtime
    help_text = subprocess.run(["make", "-s", "-C", ROOT, "help"], capture_output=True, text=True).stdout
    assert all(t in help_text for t in ("train-vanilla", "train-thermo", "train-sequential", "bench"))


def test_example_job_file_is_valid():
    """The README's walk-through file parses, line by line, as commands."""
    from kaem.run.jobs import read_job_file

    jobs = read_job_file(os.path.join(ROOT, "examples", "day-with-kaem.txt"), cli._check_job)
    assert len(jobs) == 4 and not any(j.error for j in jobs)
    assert [j.argv[0] for j in jobs] == ["train", "train", "eval", "eval"]
