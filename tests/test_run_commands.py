"""The commands behind cli.py as the package holds them (kaem/run/session, sampling, scoring),
and what a new user meets at the command line: a resume that reads its checkpoint only under
the run lock, a finished run that says so, a file or a folder that is not a checkpoint, a
failed or forbidden download, the test set a checkpoint remembers, and one-line argument
errors."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

import cli
from conftest import TINY_CLI, one_error_line
from kaem.run import checkpoint as checkpoint_module
from kaem.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _train_args(data_dir, out, *extra):
    return ["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "40",
            "--n-test", "30", "--batch-size", "20", "--epochs", "1", "--out", str(out), *TINY_CLI, *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """A one-epoch run trained with --data-dir D --n-test 30 (D holds 60 test images)."""
    out = tmp_path_factory.mktemp("run")
    assert cli.main(_train_args(data_dir, out)) == 0
    return out


# --------------------------------------------------------------------------- resume and the lock

def test_resume_reads_the_checkpoint_only_while_holding_the_run_lock(run, data_dir, tmp_path, monkeypatch):
    """A resume takes the run lock first and reads the checkpoint after: while it reads, the
    lock file names this process and a second trainer is refused, so a trainer finishing
    meanwhile cannot have its newer checkpoint overwritten from an older state."""
    import shutil

    from kaem.run.lock import RunLock, RunLockError

    out = tmp_path / "r"
    shutil.copytree(run, out)
    ckpt = str(out / "ckpt.npz")
    load, seen = checkpoint_module.load_checkpoint, []

    def spy(path, *a, **kw):
        if path == ckpt:
            with open(out / ".lock") as fh:
                seen.append(int(fh.read().split()[0]))
            with pytest.raises(RunLockError):
                RunLock(str(out)).acquire()
        return load(path, *a, **kw)

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", spy)
    assert cli.main(["train", "--resume", ckpt, "--epochs", "2", "--data-dir", data_dir, "--no-download"]) == 0
    assert seen == [os.getpid()]
    assert load(ckpt)["meta"]["iteration"] == 4


def test_resume_while_another_trainer_holds_the_folder_reads_nothing(run, data_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from kaem.run.lock import RunLock

    out = tmp_path / "r"
    shutil.copytree(run, out)
    ckpt = str(out / "ckpt.npz")
    before = _sha(ckpt)

    def never(path, *a, **kw):
        raise AssertionError(f"read {path} without the run lock")

    with RunLock(str(out)):  # the other trainer, still finishing
        monkeypatch.setattr(checkpoint_module, "load_checkpoint", never)
        for argv in (["train", "--resume", ckpt, "--epochs", "2", "--data-dir", data_dir, "--no-download"],
                     _train_args(data_dir, out, "--epochs", "2", "--resume-existing")):
            assert cli.main(argv) == 1
            one_error_line(capsys, "in use by another trainer", f"pid {os.getpid()}")
    assert _sha(ckpt) == before


def test_a_failing_resume_into_a_new_folder_leaves_no_folder(run, tmp_path, capsys):
    assert cli.main(["train", "--resume", str(run / "ckpt.npz"), "--dataset", "mnist",
                     "--out", str(tmp_path / "new" / "deeper")]) == 2
    one_error_line(capsys, "--dataset mnist differs")
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- a finished run

def test_rerunning_a_finished_run_says_it_is_finished(run, data_dir, capsys):
    ckpt, log = run / "ckpt.npz", run / "log.csv"
    before = (_sha(ckpt), _sha(log))
    capsys.readouterr()
    for argv in (_train_args(data_dir, run, "--resume-existing"),
                 ["train", "--resume", str(ckpt), "--data-dir", data_dir, "--no-download"]):
        assert cli.main(argv) == 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"{run} is finished (epoch 1 of 1); nothing to train — raise --epochs to continue"]
    assert (_sha(ckpt), _sha(log)) == before


def test_a_run_stopped_by_max_iters_says_so(data_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(_train_args(data_dir, out, "--epochs", "2", "--max-iters", "3")) == 0
    before = _sha(out / "ckpt.npz")
    capsys.readouterr()
    assert cli.main(_train_args(data_dir, out, "--epochs", "2", "--max-iters", "3", "--resume-existing")) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{out} has reached --max-iters 3 (iteration 3, epoch 1.5 of 2); nothing to train — "
                   "raise --max-iters to continue"]
    assert _sha(out / "ckpt.npz") == before
    assert cli.main(_train_args(data_dir, out, "--epochs", "2", "--resume-existing")) == 0  # goes on to the end
    assert load_checkpoint(str(out / "ckpt.npz"))["meta"]["iteration"] == 4


# --------------------------------------------------------------------------- not a checkpoint

def test_a_file_that_is_no_npz_is_not_a_kaem_checkpoint(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# KAEM\n\nA readme, not a checkpoint.\n")
    pickled = tmp_path / "weights.npz"
    pickled.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for path in (readme, pickled, empty):
        before = _sha(path)
        for argv in (["eval", "--ckpt", str(path)], ["sample", "--ckpt", str(path), "--out", str(tmp_path / "x.png")],
                     ["train", "--resume", str(path), "--out", str(tmp_path / "never")]):
            assert cli.main(argv) == 1
            line = one_error_line(capsys, f"{str(path)!r} is not a KAEM checkpoint (not an .npz archive)")
            assert "allow_pickle" not in line
        assert _sha(path) == before
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "never").exists()
    with pytest.raises(CheckpointError, match="not a KAEM checkpoint"):
        load_checkpoint(str(readme))


def test_a_run_folder_given_as_the_checkpoint(run, tmp_path, capsys):
    assert cli.main(["sample", "--ckpt", str(run), "--out", str(tmp_path / "x.png")]) == 1
    one_error_line(capsys, "is a folder", f"did you mean {run / 'ckpt.npz'}?")
    (tmp_path / "empty").mkdir()
    for argv in (["sample", "--ckpt", str(tmp_path / "empty")], ["eval", "--ckpt", str(tmp_path / "empty")],
                 ["train", "--resume", str(tmp_path / "empty")]):
        assert cli.main(argv) == 1
        line = one_error_line(capsys, "is a folder", str(tmp_path / "empty" / "ckpt.npz"))
        assert "did you mean" not in line
    assert os.listdir(tmp_path / "empty") == [] and not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- downloads

@pytest.fixture
def offline(monkeypatch):
    """Every URL fails as on a machine without network."""
    def unreachable(url, *a, **kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)


@pytest.mark.parametrize("name", ["mnist", "svhn", "cifar10"])
def test_a_failed_download_leaves_no_empty_folder(name, tmp_path, offline, capsys):
    from kaem.datasets import DatasetError, load_dataset

    with pytest.raises(DatasetError, match="check the network") as info:
        load_dataset(name, "test", tmp_path / "data", download=True)
    assert "\n" not in str(info.value) and "download=True" not in str(info.value)
    assert not (tmp_path / "data").exists()
    # a folder that was there, and the user's file in it, stay as they were
    mine = tmp_path / "mine" / name / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my notes")
    with pytest.raises(DatasetError):
        load_dataset(name, "test", tmp_path / "mine", download=True)
    assert os.listdir(mine.parent) == ["notes.txt"] and mine.read_text() == "my notes"
    (tmp_path / "bare" / name).mkdir(parents=True)  # an empty folder of the user's is kept too
    with pytest.raises(DatasetError):
        load_dataset(name, "test", tmp_path / "bare", download=True)
    assert (tmp_path / "bare" / name).is_dir()


def test_train_with_a_failed_download_is_one_line_and_leaves_no_folder(tmp_path, offline, capsys):
    code = cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out",
                     str(tmp_path / "out"), *TINY_CLI])
    lines = capsys.readouterr().err.strip().splitlines()  # "fetching MNIST into ...", then the error
    assert code == 1 and lines[-1].startswith("error: MNIST") and lines[-1].endswith("check the network")
    assert [line for line in lines if line.startswith("error")] == lines[-1:]
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_the_offline_mnist_error_is_short_and_speaks_to_a_cli_user(tmp_path, capsys):
    folder = tmp_path / "data"
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(folder), "--no-download",
                     "--out", str(tmp_path / "out"), *TINY_CLI]) == 1
    line = one_error_line(capsys, "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", str(folder / "mnist"),
                      "drop --no-download")
    assert "download=True" not in line and " | " not in line
    assert len(line) - len(str(folder.resolve())) <= 340, len(line)  # was one 700-character line
    assert not folder.exists() and not (tmp_path / "out").exists()
    from kaem.datasets import DatasetError, load_dataset

    with pytest.raises(DatasetError) as info:  # the Python API: files and folder, no CLI flag
        load_dataset("mnist", "test", folder, download=False)
    assert "--no-download" not in str(info.value) and "\n" not in str(info.value) and info.value.offline


# --------------------------------------------------------------------------- the data a checkpoint remembers

def test_eval_and_compare_use_the_checkpoints_data_folder_and_test_count(run, data_dir, tmp_path, monkeypatch,
                                                                         capsys):
    """Trained with --data-dir D --n-test 30: eval and compare, run from a folder without
    ./data, use D and 30 (the same numbers as when both are given); explicit options win."""
    from conftest import _write_idx

    meta = load_checkpoint(str(run / "ckpt.npz"))["meta"]
    assert meta["data_dir"] == data_dir and meta["n_test"] == 30
    monkeypatch.chdir(tmp_path)
    ckpt = str(run / "ckpt.npz")
    assert cli.main(["eval", "--ckpt", ckpt, "--samples", "20", "--json"]) == 0
    by_default = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", "--ckpt", ckpt, "--samples", "20", "--json", "--data-dir", data_dir, "--n-test", "30",
                     "--no-download"]) == 0
    assert json.loads(capsys.readouterr().out) == by_default and by_default["n_test"] == 30
    assert cli.main(["eval", "--ckpt", ckpt, "--samples", "20", "--json", "--n-test", "12"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 12
    other = tmp_path / "other" / "fmnist"  # a folder with 5 test images: --data-dir wins, the count stays 30
    other.mkdir(parents=True)
    for prefix, n in (("train", 5), ("t10k", 5)):
        _write_idx(other / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        _write_idx(other / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n))
    assert cli.main(["eval", "--ckpt", ckpt, "--data-dir", str(tmp_path / "other")]) == 1
    one_error_line(capsys, "asked for n=30 images", str(other))
    assert cli.main(["compare", "--ckpt", ckpt, "--out", str(tmp_path / "c.png"), "--n", "3"]) == 0
    assert "30 test images" in capsys.readouterr().out


def test_resume_defaults_to_the_checkpoints_data(run, data_dir, tmp_path, monkeypatch, capsys):
    import shutil

    shutil.copytree(run, tmp_path / "r")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--resume", str(tmp_path / "r" / "ckpt.npz"), "--epochs", "2"]) == 0
    meta = load_checkpoint(str(tmp_path / "r" / "ckpt.npz"))["meta"]
    assert (meta["iteration"], meta["data_dir"], meta["n_test"]) == (4, data_dir, 30)


def test_checkpoints_without_data_fields_still_load_and_bad_ones_are_named(run, data_dir, tmp_path, capsys):
    ckpt = load_checkpoint(str(run / "ckpt.npz"))
    old = tmp_path / "old.npz"
    meta = {k: v for k, v in ckpt["meta"].items() if k not in ("data_dir", "n_test")}
    save_checkpoint(str(old), ckpt["params"], ckpt["buffers"], ckpt["optimizer"], ckpt["config"], meta)
    assert "data_dir" not in load_checkpoint(str(old))["meta"]
    assert cli.main(["eval", "--ckpt", str(old), "--data-dir", data_dir, "--n-test", "10", "--samples", "20",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 10
    for key, value in (("data_dir", 5), ("data_dir", ""), ("n_test", -1), ("n_test", "30")):
        bad = tmp_path / "bad.npz"
        save_checkpoint(str(bad), ckpt["params"], ckpt["buffers"], ckpt["optimizer"], ckpt["config"],
                        {**ckpt["meta"], key: value})
        with pytest.raises(CheckpointError, match=f"meta.{key}"):
            load_checkpoint(str(bad))


# --------------------------------------------------------------------------- argument errors

@pytest.mark.parametrize("argv,hint", [
    (["train", "--epochs", "ten"], "see 'python cli.py train --help'"),
    (["eval"], "see 'python cli.py eval --help'"),
    (["trian"], "see 'python cli.py --help'"),
    ([], "see 'python cli.py --help'"),
])
def test_argument_errors_are_one_line_with_a_hint(argv, hint):
    res = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *argv], capture_output=True, text=True)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1, res.stderr
    assert err[0].startswith("error: ") and err[0].endswith(f"({hint})") and "usage:" not in res.stderr
    assert res.stdout == ""


def test_a_job_line_with_bad_arguments_is_recorded_not_printed():
    assert cli._check_job(["train", "--epochs", "ten"]).startswith("cli.py train: argument --epochs")


# --------------------------------------------------------------------------- the Python API reaches the commands

def test_training_sampling_and_evaluation_from_python(data_dir, tmp_path):
    from kaem.run.sampling import sample_checkpoint
    from kaem.run.scoring import evaluate_checkpoint, evaluation_lines
    from kaem.run.session import TrainOptions, plan_training, run_training

    lines = []
    opts = TrainOptions(dataset="fmnist", out=str(tmp_path / "r"), overrides=TINY_CLI[1::2], n_train=40, n_test=20,
                        batch_size=20, epochs=1, data_dir=data_dir, download=False)
    plan = plan_training(opts)
    assert plan.out == str(tmp_path / "r") and not os.path.exists(plan.out)  # planning writes nothing
    assert run_training(plan, log=lines.append) == 0
    assert lines[-1] == f"saved {tmp_path / 'r' / 'ckpt.npz'}"
    ckpt = str(tmp_path / "r" / "ckpt.npz")
    ev = evaluate_checkpoint(ckpt, samples=20)
    assert ev.result["n_test"] == 20 and np.isfinite(ev.result["loglik_nats"])
    assert evaluation_lines(ckpt, ev)[0] == f"checkpoint {ckpt} (iteration 2), 20 test images"
    said = []
    assert sample_checkpoint(ckpt, 4, str(tmp_path / "s.png"), say=said.append) == {"output": str(tmp_path / "s.png")}
    assert said == [f"wrote {tmp_path / 's.png'} (4 samples)"]
