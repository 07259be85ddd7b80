"""CLI end to end on a small generated IDX dataset: train -> checkpoint -> sample ->
resume -> eval, and the failure paths (bad --set, missing dataset, truncated or foreign
checkpoint, refusing to overwrite a run) that must exit non-zero and leave files intact."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--set", "EbmModel.layer_widths=4,9", "--set", "GeneratorModel.widths=9,16",
        "--set", "EbmModel.grid_size=5", "--set", "GeneratorModel.grid_size=5",
        "--set", "TRAINING.importance_sample_size=20", "--set", "TRAINING.eval_importance_samples=100"]


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _train(tmp, data_dir, *extra):
    return cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download",
                     "--n-train", "200", "--n-test", "50", "--batch-size", "50", "--epochs", "2",
                     "--out", str(tmp), "--log-every", "2", *TINY, *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run")
    assert _train(out, data_dir, "--max-iters", "6") == 0
    return out


def test_train_writes_checkpoint_and_csv(run):
    assert (run / "ckpt.npz").exists()
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [r["iteration"] for r in rows] == ["0", "4", "6"]  # untrained, epoch 1, stop at max-iters
    assert all(np.isfinite(float(r["heldout_loglik_nats"])) for r in rows)
    assert not [f for f in os.listdir(run) if f.startswith(".tmp-")]  # no leftover temp files


def test_sample_writes_png_of_right_size(run, tmp_path, capsys):
    png = tmp_path / "s.png"
    assert cli.main(["sample", "--ckpt", str(run / "ckpt.npz"), "--n", "10", "--out", str(png), "--npy"]) == 0
    w, h = Image.open(png).size
    # 4 columns x 3 rows of 28px tiles, 2px padding (122 x 92), enlarged 4x: 488 px is the multiple nearest 512
    assert (w, h) == (4 * (4 * 30 + 2), 4 * (3 * 30 + 2))
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (10, 1, 28, 28) and 0 <= arr.min() and arr.max() <= 1


def test_resume_continues_at_saved_iteration(run, data_dir, tmp_path, capsys):
    import shutil

    from kaem.run.checkpoint import load_checkpoint

    shutil.copytree(run, tmp_path / "r", dirs_exist_ok=True)
    ckpt = str(tmp_path / "r" / "ckpt.npz")
    assert load_checkpoint(ckpt)["meta"]["iteration"] == 6
    assert cli.main(["train", "--resume", ckpt, "--epochs", "2", "--data-dir", data_dir, "--no-download",
                     "--n-test", "50", "--log-every", "1"]) == 0
    err = capsys.readouterr().err
    assert "at iteration 6" in err and "it 7/8" in err and "it 1/" not in err
    assert load_checkpoint(ckpt)["meta"]["iteration"] == 8


def test_resume_matches_uninterrupted_run(run, data_dir, tmp_path):
    """Same batches and, on CPU, the same random stream: resumed == straight through."""
    import shutil

    from kaem.run.checkpoint import load_checkpoint

    shutil.copytree(run, tmp_path / "r", dirs_exist_ok=True)
    assert cli.main(["train", "--resume", str(tmp_path / "r" / "ckpt.npz"), "--epochs", "2",
                     "--data-dir", data_dir, "--no-download", "--n-test", "50"]) == 0
    assert _train(tmp_path / "straight", data_dir) == 0
    a = load_checkpoint(str(tmp_path / "r" / "ckpt.npz"))["params"]
    b = load_checkpoint(str(tmp_path / "straight" / "ckpt.npz"))["params"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_eval_prints_finite_numbers(run, data_dir, capsys):
    assert cli.main(["eval", "--ckpt", str(run / "ckpt.npz"), "--data-dir", data_dir, "--no-download",
                     "--n-test", "40", "--samples", "50", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert all(np.isfinite(res[k]) for k in ("loglik_nats", "bits_per_dim", "test_mse"))
    assert res["S"] == 50 and res["n_test"] == 40


def test_bad_set_value_fails_and_leaves_run_intact(run, data_dir, capsys):
    before = _sha(run / "ckpt.npz")
    code = cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--out", str(run),
                     "--set", "EbmModel.grid_size=banana"])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "banana" in err and "grid_size" in err
    assert _sha(run / "ckpt.npz") == before


def test_refuses_to_overwrite_existing_run(run, data_dir, capsys):
    before = _sha(run / "ckpt.npz")
    assert _train(run, data_dir) == 2
    assert "--resume" in capsys.readouterr().err
    assert _sha(run / "ckpt.npz") == before


def test_missing_dataset_names_the_files(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"), "--no-download",
                     "--out", str(tmp_path / "o"), *TINY])
    err = capsys.readouterr().err
    assert code == 1 and "train-images-idx3-ubyte" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "o" / "ckpt.npz").exists()


def test_truncated_and_foreign_checkpoints(run, tmp_path, capsys):
    raw = open(run / "ckpt.npz", "rb").read()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(raw[: len(raw) // 2])
    before = _sha(bad)
    assert cli.main(["sample", "--ckpt", str(bad), "--out", str(tmp_path / "x.png")]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err and _sha(bad) == before
    assert not (tmp_path / "x.png").exists()
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    assert cli.main(["eval", "--ckpt", str(foreign)]) == 1
    assert "not a KAEM checkpoint" in capsys.readouterr().err
    assert cli.main(["sample", "--ckpt", str(tmp_path / "nope.npz")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_help_runs_as_a_script():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--resume" in out and "--set" in out and "--device" in out


def test_unwritable_output_is_an_error_not_a_traceback(run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["sample", "--ckpt", str(run / "ckpt.npz"), "--out", str(blocker / "x.png")]) == 1
    assert "error:" in capsys.readouterr().err and blocker.read_text() == "not a folder"
