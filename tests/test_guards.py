"""NaN/inf at every stage, degenerate grid updates, and the small pieces the reliability
guarantees rest on: the run lock, stale temp files, atomic writes that name the user's
path, the CSV log's reconciliation and the memory estimate."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import cli
import kaem.nn.grid_update as gu
from conftest import PAIR, TINY_CLI, tiny_config
from kaem.run.atomic import atomic_open, stale_temp_files, temp_owner
from kaem.run.checkpoint import load_checkpoint
from kaem.config import load_config
from kaem.run.logfile import append_row, reconcile
from kaem.nn.grid_update import GridUpdateWarning, update_layer_grid, update_pointwise_grid
from kaem.run.memory import MemoryBudgetError, check_training_memory, training_memory
from kaem.model import KAEM
from kaem.run.lock import RunLock, RunLockError, pid_alive
from kaem.run.trainer import Trainer, TrainingError

TINY = TINY_CLI


def _train(data_dir, out, *extra):
    return cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "40",
                     "--n-test", "10", "--batch-size", "20", "--epochs", "2", "--out", str(out), *TINY, *extra])


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------------------ NaN / inf

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_absurd_learning_rate_stops_with_a_finite_last_good(data_dir, tmp_path, capsys):
    """The issue's case: lr = 1e30. Training stops with one error line; last_good.npz holds
    finite parameters that evaluate to finite numbers; resuming from it is refused."""
    out = tmp_path / "run"
    assert _train(data_dir, out, "--set", "OPTIMIZER.learning_rate=1e30") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: non-finite") and "last_good.npz" in err[-1]
    good = load_checkpoint(str(out / "last_good.npz"))
    assert all(np.isfinite(v).all() for v in good["params"].values())
    assert cli.main(["eval", "--ckpt", str(out / "last_good.npz"), "--data-dir", data_dir, "--no-download",
                     "--n-test", "10", "--samples", "20"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out / "last_good.npz"), "--data-dir", data_dir, "--no-download",
                     "--n-test", "10"]) == 1
    assert "last_good snapshot" in capsys.readouterr().err


def test_overflowing_update_is_caught_after_the_step(be64, tmp_path, monkeypatch):
    """An optimiser step that overflows a parameter stops training at once; last_good.npz
    holds the parameters before that step (their forward pass was finite), not inf."""
    model = KAEM(tiny_config("TRAINING.batch_size=10"), (1, 2, 3), be64, seed=0)
    x = np.random.default_rng(0).random((40, 6))
    tr = Trainer(model, be64, x, x[:5], str(tmp_path), log=lambda m: None)
    tr.run(epochs=1, max_iters=2)
    before = {k: v.copy() for k, v in model.parameters().items()}
    step = tr.opt.step

    def overflowing(grads):
        step(grads)
        model.parameters()["gen.0.w_sp"][0, 0] = np.inf

    monkeypatch.setattr(tr.opt, "step", overflowing)
    with pytest.raises(TrainingError, match="parameters after the optimiser step at iteration 2"):
        tr.run(epochs=1)
    saved = load_checkpoint(os.path.join(tmp_path, "last_good.npz"))
    assert saved["meta"]["iteration"] == 2
    for k, v in before.items():
        np.testing.assert_array_equal(saved["params"][k], v)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_eval_and_sample_of_a_diverged_model_fail(data_dir, tmp_path, capsys):
    """Finite parameters whose forward pass overflows (generator activations beyond float32)."""
    out = tmp_path / "run"
    assert _train(data_dir, out, "--epochs", "1") == 0
    with np.load(out / "ckpt.npz") as z:
        entries = {k: z[k] for k in z.files}
    entries["param/gen.0.w_base"] = np.full_like(entries["param/gen.0.w_base"], 3e38)
    bad = tmp_path / "diverged.npz"
    with open(bad, "wb") as fh:
        np.savez(fh, **entries)
    capsys.readouterr()
    assert cli.main(["eval", "--ckpt", str(bad), "--data-dir", data_dir, "--no-download", "--n-test", "10",
                     "--samples", "20"]) != 0
    assert "non-finite" in capsys.readouterr().err
    assert cli.main(["sample", "--ckpt", str(bad), "--out", str(tmp_path / "s.png")]) != 0
    assert "non-finite" in capsys.readouterr().err and not (tmp_path / "s.png").exists()


# ------------------------------------------------------------------------------ grid updating

def _layer(be, basis="RBF"):
    m = KAEM(tiny_config(basis=basis), (1, 2, 3), be, seed=0)
    return m, m.generator.layers[0]


@pytest.mark.parametrize("basis", ["RBF", "B-spline"])
def test_degenerate_dimension_keeps_its_grid_and_the_others_update(be64, basis):
    _, layer = _layer(be64, basis)
    x = np.random.default_rng(0).normal(size=(50, layer.in_dim))
    x[:, 1] = 0.3  # every draw the same point: zero width
    x[3, 2] = np.nan  # a non-finite sample
    grid0, coef0 = layer.buffers["grid"].copy(), layer.params["coef"].copy()
    with pytest.warns(GridUpdateWarning, match="2 of 4"):
        assert update_layer_grid(layer, x, 0.05)
    g, c = layer.buffers["grid"], layer.params["coef"]
    for i in (1, 2):
        np.testing.assert_array_equal(g[i], grid0[i])
        np.testing.assert_array_equal(c[i], coef0[i])
    assert not np.array_equal(g[0], grid0[0]) and np.isfinite(g).all() and np.isfinite(c).all()


def test_all_degenerate_or_failing_svd_keeps_every_grid(be64, monkeypatch):
    m, layer = _layer(be64)
    grid0, coef0 = layer.buffers["grid"].copy(), layer.params["coef"].copy()
    with pytest.warns(GridUpdateWarning, match="every input dimension"):
        assert not update_layer_grid(layer, np.full((20, layer.in_dim), 0.5), 0.05)

    def no_convergence(A, y, ridge=0.0):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(gu, "lstsq_batched", no_convergence)
    z = m.sample_prior(30, be64.rng(0))
    p_grid = m.prior.layer.buffers["grid"].copy()
    with pytest.warns(GridUpdateWarning, match="did not converge"):
        assert not update_layer_grid(layer, np.random.default_rng(1).normal(size=(20, layer.in_dim)), 0.05)
    with pytest.warns(GridUpdateWarning, match="did not converge"):
        assert not update_pointwise_grid(m.prior.layer, z, 0.05)
    np.testing.assert_array_equal(layer.buffers["grid"], grid0)
    np.testing.assert_array_equal(layer.params["coef"], coef0)
    np.testing.assert_array_equal(m.prior.layer.buffers["grid"], p_grid)


def test_importance_sampling_with_one_sample_trains_through_grid_updates(be64, tmp_path):
    """S = 1: every grid-update draw is the same point (the issue's LinAlgError). The
    generator's degenerate grid is kept with a warning and training goes on, finite."""
    cfg = tiny_config("TRAINING.batch_size=10", "TRAINING.importance_sample_size=1",
                      "GRID_UPDATING.grid_update_frequency=1", "TRAINING.eval_importance_samples=10")
    model = KAEM(cfg, (1, 2, 3), be64, seed=0)
    x = np.random.default_rng(0).random((40, 6))
    tr = Trainer(model, be64, x, x[:5], str(tmp_path), log=lambda m: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = tr.run(epochs=2)
    assert any(issubclass(w.category, GridUpdateWarning) for w in caught)
    assert all(np.isfinite(v).all() for v in model.parameters().values()) and np.isfinite(rows[-1]["train_loss"])


# ------------------------------------------------------------------------------ CSV log

def test_reconcile_drops_rows_the_checkpoint_has_not_completed(tmp_path):
    cols = ("epoch", "iteration", "loss")
    path = str(tmp_path / "log.csv")
    for it in (0, 10, 20, 20, 30):
        append_row(path, cols, {"iteration": it, "loss": it / 10})
    with open(path, "a") as fh:
        fh.write("4,40,0.")  # a torn last line
    assert reconcile(path, cols, 20, row_pending=False) == 3  # the second 20, 30 and the torn line
    assert [r.split(",")[1] for r in open(path).read().split()[1:]] == ["0", "10", "20"]
    assert reconcile(path, cols, 20, row_pending=True) == 1  # its row will be written again
    assert reconcile(path, cols, 0, row_pending=True) == 2  # a fresh start keeps nothing
    assert open(path).read().split() == ["epoch,iteration,loss"]


def test_crash_between_csv_row_and_checkpoint_leaves_no_duplicate_row(be64, tmp_path, monkeypatch):
    import kaem.run.trainer

    model = KAEM(tiny_config("TRAINING.batch_size=10", "TRAINING.eval_importance_samples=10"), (1, 2, 3), be64, seed=0)
    x = np.random.default_rng(0).random((40, 6))
    tr = Trainer(model, be64, x, x[:5], str(tmp_path), log=lambda m: None)
    tr.run(epochs=1)
    save = kaem.run.trainer.save_checkpoint

    def crash(*a, **k):
        raise OSError(errno.EIO, "simulated crash")

    monkeypatch.setattr(kaem.run.trainer, "save_checkpoint", crash)
    with pytest.raises(OSError):
        tr.run(epochs=2)  # epoch 2's row is written, its checkpoint is not
    monkeypatch.setattr(kaem.run.trainer, "save_checkpoint", save)
    from kaem.run.checkpoint import restore_model

    ck = load_checkpoint(os.path.join(tmp_path, "ckpt.npz"))
    tr2 = Trainer(restore_model(ck, be64), be64, x, x[:5], str(tmp_path), log=lambda m: None)
    tr2.restore(ck)
    tr2.run(epochs=2)
    its = [line.split(",")[2] for line in open(tmp_path / "log.csv").read().split()[1:]]
    assert its == ["0", "4", "8"]


# ------------------------------------------------------------------------------ lock, temp files, writes

def test_run_lock_refuses_a_second_holder_and_takes_over_a_dead_ones(tmp_path):
    with RunLock(str(tmp_path)) as lock:
        assert open(lock.path).read().strip() == str(os.getpid())
        with pytest.raises(RunLockError, match=f"pid {os.getpid()}"):
            RunLock(str(tmp_path)).acquire()
    assert not os.path.exists(tmp_path / ".lock")
    dead = _dead_pid()
    assert not pid_alive(dead)
    (tmp_path / ".lock").write_text(f"{dead}\n")
    with RunLock(str(tmp_path)) as lock:
        assert lock.taken_over == dead


def test_stale_temp_files_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    dead = _dead_pid()
    names = {f".tmp-{dead}-abcd_123.npz": True, ".tmp-x8k2j1qz.npz": True,  # dead writer; old name
             f".tmp-{os.getpid()}-abcdefgh.png": False,  # a live writer (us)
             ".tmp-notours": False, "ckpt.npz": False, "tmp-123-abcdefgh.npz": False}
    for n in names:
        (tmp_path / n).write_text("x")
    with RunLock(str(tmp_path)) as lock:
        assert sorted(os.path.basename(p) for p in lock.removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, gone in names.items() if not gone)
    assert temp_owner(".tmp-12-abcdefgh.npz") == 12 and temp_owner("ckpt.npz") is None
    assert stale_temp_files(str(tmp_path / "missing"), pid_alive) == []


def test_failing_atomic_write_names_the_users_path_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        with atomic_open(str(path), "wb") as fh:
            fh.write(b"new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["ckpt.npz"]


# ------------------------------------------------------------------------------ memory

def test_memory_estimate_of_the_default_config_is_plausible():
    """The MNIST config (IS, B = S = 100, 41->82->784) with pair noise: the largest parts
    are the data (50 000 images, 157 MB) and the B·S·D buffers (63 MB); bench/train_step.py
    measured 238 MiB peak RSS without the full data."""
    items = training_memory(load_config("mnist", overrides=[PAIR]), (1, 28, 28), 50_000, 1_000, 4)
    total = sum(b for _, b, _ in items)
    assert 250e6 < total < 500e6, items
    assert max(items, key=lambda it: it[1])[0].startswith("training and held-out data")
    # noise_sharing = sample (the default) keeps (S, D) outputs instead of the (B, S, D) pair
    shared = training_memory(load_config("mnist"), (1, 28, 28), 50_000, 1_000, 4)
    B, S, D = 100, 100, 784
    assert sum(b for _, b, _ in shared) == total - 4 * (2 * B * S * D - 2 * S * D - 4 * B * S)


def test_memory_check_names_the_figure_and_the_setting(monkeypatch):
    from kaem.backend import get_backend

    import kaem.run.memory

    monkeypatch.setattr(kaem.run.memory, "available_host_memory", lambda: 500 * 2 ** 20)  # 500 MiB
    cfg = load_config("mnist", overrides=["TRAINING.importance_sample_size=2000", PAIR])
    with pytest.raises(MemoryBudgetError, match=r"needs about .* GiB .* 500 MiB .*B·S·D.*importance_sample_size"):
        check_training_memory(cfg, (1, 28, 28), 1000, 100, get_backend("cpu", "float32"))
    check_training_memory(load_config("mnist"), (1, 28, 28), 1000, 100, get_backend("cpu", "float32"))


def test_job_file_stops_at_a_job_ended_by_sigterm(tmp_path):
    """A SIGTERM'd training (exit 143, checkpointed) stops the job file like Ctrl-C (130):
    recorded as interrupted, the later jobs left pending, not run as if it had failed."""
    from kaem.run.jobs import parse_jobs, run_jobs

    jobs = parse_jobs("train --out a\ntrain --out b\n")
    ran = []

    def execute(argv):
        ran.append(argv)
        return 143, "", {}

    done = run_jobs(jobs, execute, str(tmp_path / "s.csv"), str(tmp_path / "s.md"), log=lambda m: None)
    assert done.status == 143 and len(ran) == 1
    assert [r["status"] for r in done.rows] == ["interrupted", "pending"]
